//go:build unix

package testenv

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisCluster starts a 3-master cluster and writes keys under 30 hash
// tags through the cluster URL: each is read back, and the tags land on
// every master.
func TestRedisCluster(t *testing.T) {
	begin := time.Now()
	c := StartRedisCluster(t, 3)
	t.Logf("started a 3-master Redis Cluster in %v", time.Since(begin).Round(time.Millisecond))

	opt, err := redis.ParseClusterURL(c.ClusterURL())
	if err != nil {
		t.Fatalf("ParseClusterURL(%q) = %v", c.ClusterURL(), err)
	}
	if len(opt.Addrs) != 3 {
		t.Fatalf("ParseClusterURL(%q).Addrs = %v, want the 3 masters", c.ClusterURL(), opt.Addrs)
	}
	rc := c.Client(t)
	ctx := t.Context()
	perMaster := map[string]int{}
	for i := range 30 {
		key := "{tag-" + strconv.Itoa(i) + "}:k"
		if err := rc.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if got, err := rc.Get(ctx, key).Int(); err != nil || got != i {
			t.Fatalf("GET %s = %d, %v; want %d", key, got, err, i)
		}
		perMaster[c.MasterOf(t, rc, key)]++
	}
	for _, a := range c.Addrs {
		if perMaster[a] == 0 {
			t.Errorf("keys per master %v: none on %s", perMaster, a)
		}
	}
}
