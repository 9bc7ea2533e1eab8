package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestNewRedisClient: each REDIS_MODE builds its kind of client, with the
// fail-fast timeouts and the pool sized to WORKER_CONCURRENCY unless the URL
// sets them.
func TestNewRedisClient(t *testing.T) {
	type settings struct {
		maxRetries, dialerRetries, poolSize int
		dial, read, write                   time.Duration
	}
	failFast := settings{1, 1, 84, time.Second, 2 * time.Second, 2 * time.Second} // WORKER_CONCURRENCY=64
	for _, tc := range []struct {
		name, mode, url string
		want            settings
		where           string
	}{
		{"standalone", "standalone", "redis://r:6379/1", failFast, "mode=standalone addr=r:6379"},
		{"standalone url wins", "standalone", "redis://r:6379?max_retries=5&pool_size=7&dial_timeout=3s",
			settings{5, 1, 7, 3 * time.Second, 2 * time.Second, 2 * time.Second}, "mode=standalone addr=r:6379"},
		{"sentinel", "sentinel", "redis://s1:26379?master_name=mymaster&addr=s2:26379&addr=s3:26379", failFast,
			"mode=sentinel master_name=mymaster sentinels=s1:26379,s2:26379,s3:26379"},
		{"sentinel url wins", "sentinel", "redis://s1:26379?master_name=m&read_timeout=5s&pool_size=9",
			settings{1, 1, 9, time.Second, 5 * time.Second, 2 * time.Second}, "mode=sentinel master_name=m sentinels=s1:26379"},
		{"cluster", "cluster", "redis://n1:6379?addr=n2:6379&addr=n3:6379", failFast, "mode=cluster nodes=n1:6379,n2:6379,n3:6379"},
		{"cluster url wins", "cluster", "redis://n1:6379?write_timeout=4s&max_retries=3",
			settings{3, 1, 84, time.Second, 2 * time.Second, 4 * time.Second}, "mode=cluster nodes=n1:6379"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(nil, env{"REDIS_MODE": tc.mode, "REDIS_URL": tc.url, "WORKER_CONCURRENCY": "64"})
			if err != nil {
				t.Fatal(err)
			}
			rdb, where, err := newRedisClient(cfg)
			if err != nil {
				t.Fatalf("newRedisClient(%s %s) error = %v", tc.mode, tc.url, err)
			}
			defer rdb.Close()
			var got settings
			switch c := rdb.(type) {
			case *redis.ClusterClient:
				if tc.mode != "cluster" {
					t.Fatalf("newRedisClient(%s) = %T", tc.mode, rdb)
				}
				o := c.Options()
				got = settings{o.MaxRetries, o.DialerRetries, o.PoolSize, o.DialTimeout, o.ReadTimeout, o.WriteTimeout}
			case *redis.Client:
				if tc.mode == "cluster" {
					t.Fatalf("newRedisClient(cluster) = %T, want *redis.ClusterClient", rdb)
				}
				o := c.Options()
				got = settings{o.MaxRetries, o.DialerRetries, o.PoolSize, o.DialTimeout, o.ReadTimeout, o.WriteTimeout}
			default:
				t.Fatalf("newRedisClient(%s) = %T", tc.mode, rdb)
			}
			if got != tc.want {
				t.Errorf("settings = %+v, want %+v", got, tc.want)
			}
			var parts []string
			for _, a := range where {
				attr := a.(slog.Attr)
				parts = append(parts, fmt.Sprintf("%s=%s", attr.Key, attr.Value))
			}
			if got := strings.Join(parts, " "); got != tc.where {
				t.Errorf("where = %q, want %q", got, tc.where)
			}
		})
	}
}

// TestRedisURLRedaction: the config's log never shows a Redis password, in
// the userinfo (a failover URL's sentinel password) or in password= (its
// master password).
func TestRedisURLRedaction(t *testing.T) {
	cfg, err := parse(nil, env{"REDIS_MODE": "sentinel",
		"REDIS_URL": "redis://user:sentinel-pw-1@s1:26379?master_name=m&password=master-pw-2&addr=s2:26379"})
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.String()
	for _, secret := range []string{"sentinel-pw-1", "master-pw-2"} {
		if strings.Contains(out, secret) {
			t.Errorf("config %s shows %q", out, secret)
		}
	}
	for _, want := range []string{"s1:26379", "master_name=m", "redis_mode=sentinel"} {
		if !strings.Contains(out, want) {
			t.Errorf("config %s lacks %q", out, want)
		}
	}
}

func TestClearTextPassword(t *testing.T) {
	for _, tc := range []struct {
		url, password string
		want          bool
	}{
		{"redis://redis.internal:6379/0", "pw", true},
		{"redis://:pw@redis.internal:6379/0", "", true},
		{"redis://redis.internal:6379/0", "", false},
		{"rediss://redis.internal:6380/0", "pw", false},
		{"redis://127.0.0.1:6379/0", "pw", false},
		{"redis://localhost:6379/0", "pw", false},
		{"redis://127.0.0.1:26379?master_name=m&addr=10.0.0.2:26379", "pw", true},
		{"unix:///run/redis.sock", "pw", false},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{RedisURL: u, RedisPassword: Secret(tc.password)}
		if got := clearTextPassword(cfg); got != tc.want {
			t.Errorf("clearTextPassword(%s, password %q) = %v, want %v", tc.url, tc.password, got, tc.want)
		}
	}
}
