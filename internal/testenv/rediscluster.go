//go:build unix

package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of masters without replicas: real
// redis-server processes with --cluster-enabled yes on free loopback ports,
// each with its own directory, cluster config file and log under
// t.TempDir(), and no persistence (--save "" --appendonly no). The 16384 hash
// slots are split evenly between the masters by redis-cli --cluster create.
// Every process is killed with SIGKILL when the test ends; if the test
// failed, the tail of each log is printed first.
//
// RedisCluster always runs its own processes, even when REDIS_URL is set.
type RedisCluster struct {
	// Addrs are the masters' host:port addresses.
	Addrs []string

	procs []*redisProc
}

// clusterNodeTimeout is cluster-node-timeout: how long a node may not answer
// before the others mark it failing.
const clusterNodeTimeout = 2 * time.Second

// StartRedisCluster starts masters redis-server processes (at least 3, as
// redis-cli --cluster create requires), joins them into one cluster with
// redis-cli --cluster create … --cluster-replicas 0 --cluster-yes, and
// returns once every node reports cluster_state:ok, all 16384 slots served
// and every other node known. It skips the test when redis-server or
// redis-cli is not on PATH.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("StartRedisCluster(%d): a Redis Cluster needs at least 3 masters", masters)
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not found on PATH (install it: apt-get install -y redis-server redis-tools): %v", bin, err)
		}
	}
	root := t.TempDir()
	c := &RedisCluster{}
	// Cleanups run last first: kill every process, then print the logs.
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.procs {
				t.Logf("last lines of %s (%s) log:\n%s", p.name, p.addr(), tail(p.logPath(), 30))
			}
		}
	})
	t.Cleanup(func() {
		for _, p := range c.procs {
			p.kill()
		}
	})

	for i := range masters {
		name := "cluster" + strconv.Itoa(i)
		dir := mkdir(t, root, name)
		p := &redisProc{name: name, dir: dir, args: []string{
			"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--dir", dir, "--loglevel", "notice",
			"--cluster-enabled", "yes", "--cluster-config-file", dir + "/nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			// The bus port defaults to port+10000, which a free port above
			// 55535 would push out of range: pick one of its own.
			"--cluster-port", strconv.Itoa(FreePort(t)),
		}}
		c.procs = append(c.procs, p)
		p.startFresh(t)
		c.Addrs = append(c.Addrs, p.addr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, c.Addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, addr := range c.Addrs {
		waitFor(t, 30*time.Second, "cluster node "+addr+" ready", func() error {
			return clusterReady(addr, masters)
		})
	}
	return c
}

// ClusterURL returns the go-redis cluster URL of the masters:
// redis://FIRST?addr=SECOND&addr=..., for redis.ParseClusterURL.
func (c *RedisCluster) ClusterURL() string {
	var b strings.Builder
	b.WriteString("redis://" + c.Addrs[0])
	for i, a := range c.Addrs[1:] {
		if i == 0 {
			b.WriteString("?addr=" + a)
		} else {
			b.WriteString("&addr=" + a)
		}
	}
	return b.String()
}

// Client returns a go-redis cluster client built from ClusterURL, closed when
// the test ends.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	opt, err := redis.ParseClusterURL(c.ClusterURL())
	if err != nil {
		t.Fatalf("parse cluster URL %q: %v", c.ClusterURL(), err)
	}
	rc := redis.NewClusterClient(opt)
	t.Cleanup(func() { rc.Close() })
	return rc
}

// MasterOf returns the address of the master that serves key's hash slot.
func (c *RedisCluster) MasterOf(t testing.TB, rc *redis.ClusterClient, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := rc.MasterForKey(ctx, key)
	if err != nil {
		t.Fatalf("master for key %q: %v", key, err)
	}
	return m.Options().Addr
}

// clusterReady reports why the node at addr does not yet serve a healthy
// cluster of nodes masters.
func clusterReady(addr string, nodes int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rc := redis.NewClient(probeOptions(addr))
	defer rc.Close()
	info, err := rc.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("%s: cluster info: %w", addr, err)
	}
	want := map[string]string{
		"cluster_state":       "ok",
		"cluster_slots_ok":    "16384",
		"cluster_known_nodes": strconv.Itoa(nodes),
		"cluster_size":        strconv.Itoa(nodes),
	}
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if w, listed := want[k]; ok && listed {
			if v != w {
				return fmt.Errorf("%s: %s:%s, want %s", addr, k, v, w)
			}
			delete(want, k)
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("%s: cluster info lacks %v", addr, want)
	}
	return nil
}
