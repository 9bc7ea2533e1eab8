// Package testenv starts the real servers the tests talk to: an in-process NATS
// server with JetStream on a temporary directory, and a redis-server process on
// a free port (or the server of REDIS_URL when that is set).
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/natsserver"
)

// NATS is an in-process NATS server with JetStream.
type NATS struct {
	Server   *server.Server
	URL      string
	StoreDir string
	t        testing.TB
	port     int
}

// StartNATS runs a NATS server with JetStream on a free loopback port and a
// t.TempDir() store; it is shut down when the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, StoreDir: t.TempDir()}
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: n.StoreDir, ServerName: "test"})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	n.Server = ns
	n.URL = ns.ClientURL()
	n.port = ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.Stop)
	return n
}

// Stop shuts the server down; the store directory is kept for Restart.
func (n *NATS) Stop() {
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
	}
}

// Restart starts the server again on the same port and store directory.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Stop()
	ns, err := natsserver.Start(natsserver.Options{Port: n.port, StoreDir: n.StoreDir, ServerName: "test"})
	if err != nil {
		n.t.Fatalf("restart nats: %v", err)
	}
	n.Server = ns
}

// Connect opens a client connection closed when the test ends.
func (n *NATS) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Redis is a Redis server for one test: its own redis-server process, or the
// shared server of REDIS_URL with a key prefix of its own.
type Redis struct {
	// URL is a redis:// URL for the server.
	URL string
	// Addr is host:port.
	Addr string
	// Prefix is a key prefix unique to the test; stores use it so tests that
	// share a server never see each other's keys.
	Prefix string
	// Own is true when the test runs its own process (Stop and Start work).
	Own  bool
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

var prefixSeq atomic.Int64

// StartRedis starts redis-server on a free loopback port, with no persistence,
// stopped when the test ends. With REDIS_URL set it uses that server instead.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{t: t, Prefix: fmt.Sprintf("test:%d:%d:", os.Getpid(), prefixSeq.Add(1))}
	if u := os.Getenv("REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		r.URL, r.Addr = u, opt.Addr
		return r
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found on PATH (install it: apt-get install -y redis-server), or set REDIS_URL: %v", err)
	}
	r.Own = true
	r.port = FreePort(t)
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	r.URL = "redis://" + r.Addr + "/0"
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start runs the server process (again, after Stop) on the same port.
func (r *Redis) Start() {
	r.t.Helper()
	if !r.Own {
		r.t.Fatalf("redis: cannot start a server this test does not own (REDIS_URL is set)")
	}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", r.t.TempDir(), "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewClient(&redis.Options{Addr: r.Addr})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s not ready: %v", r.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server process (its data is lost: it keeps nothing on disk).
func (r *Redis) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Client opens a go-redis client closed when the test ends.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatalf("redis url: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Name returns a string safe for stream, bucket and key names, unique to the test.
func Name(t testing.TB) string {
	r := strings.NewReplacer("/", "_", " ", "_", "#", "_", ".", "_")
	return r.Replace(t.Name())
}

// LogBuffer collects what a running program logs while the test reads it:
// safe for the logger's writes and the test's reads at once.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
