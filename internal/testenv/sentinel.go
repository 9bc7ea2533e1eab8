//go:build unix

package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel timings, short so that a test sees a failover within seconds.
const (
	sentinelDownAfter       = 1000 * time.Millisecond // sentinel down-after-milliseconds
	sentinelFailoverTimeout = 5000 * time.Millisecond // sentinel failover-timeout
)

// Sentinel is a Redis master with replicas, watched by sentinels: all real
// redis-server processes on free loopback ports, each with its own directory
// and log file under t.TempDir() and no persistence (--save "" --appendonly
// no), so a failover loses whatever the promoted replica had not received.
// Every process is killed with SIGKILL when the test ends; if the test failed,
// the tail of each log is printed first.
//
// Sentinel always runs its own processes, even when REDIS_URL is set. Its
// methods call t.Fatal and must be called from the test's goroutine.
type Sentinel struct {
	// MasterName is the name the sentinels monitor the master under.
	MasterName string
	// SentinelAddrs are the sentinels' host:port addresses.
	SentinelAddrs []string
	// NodeAddrs are the data nodes' host:port addresses: the master at start,
	// then its replicas.
	NodeAddrs []string

	nodes     map[string]*SentinelNode
	sentinels []*redisProc
	procs     []*redisProc // every process, in start order, for cleanup and logs
}

// SentinelNode is one data node of a Sentinel: the master or a replica.
type SentinelNode struct {
	// Addr is the node's host:port; it keeps it across Restart.
	Addr string
	s    *Sentinel
	p    *redisProc
}

// StartSentinel starts a master, replicas replicas of it and sentinels
// sentinels that monitor it with a quorum of a majority of them,
// down-after-milliseconds 1000 and failover-timeout 5000. It returns once
// every replica's link to the master is up and every sentinel names the
// master, lists every replica as healthy and knows the other sentinels, so a
// failover can start at once. It skips the test when redis-server is not on
// PATH: unlike StartRedis it cannot fall back to the server of REDIS_URL.
func StartSentinel(t testing.TB, replicas, sentinels int) *Sentinel {
	t.Helper()
	if replicas < 0 || sentinels < 1 {
		t.Fatalf("StartSentinel(%d replicas, %d sentinels): want replicas >= 0 and sentinels >= 1", replicas, sentinels)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("redis-server not found on PATH (install it: apt-get install -y redis-server): %v", err)
	}
	root := t.TempDir()
	s := &Sentinel{MasterName: "payworker", nodes: make(map[string]*SentinelNode)}
	// Cleanups run last first: kill every process, then print the logs.
	t.Cleanup(func() {
		if t.Failed() {
			s.logTails(t, 30)
		}
	})
	t.Cleanup(s.killAll)

	master := s.startNode(t, root, "node0", "")
	for i := 1; i <= replicas; i++ {
		s.startNode(t, root, "node"+strconv.Itoa(i), master.Addr)
	}
	for _, addr := range s.NodeAddrs[1:] {
		waitFor(t, 10*time.Second, "replica "+addr+" link to master "+master.Addr, func() error {
			return replicaLinkUp(addr)
		})
	}

	quorum := sentinels/2 + 1
	for i := 0; i < sentinels; i++ {
		s.startSentinel(t, root, i, master.Addr, quorum)
	}
	for _, addr := range s.SentinelAddrs {
		waitFor(t, 20*time.Second, "sentinel "+addr+" ready", func() error {
			return s.sentinelReady(addr, master.Addr, replicas, sentinels-1)
		})
	}
	return s
}

// MasterAddr returns the master's host:port as the first sentinel that
// answers names it (SENTINEL get-master-addr-by-name). During a failover the
// sentinels may disagree; WaitFailover waits until they do not.
func (s *Sentinel) MasterAddr(t testing.TB) string {
	t.Helper()
	var errs []error
	for _, p := range s.sentinels {
		if !p.running() {
			continue
		}
		addr, err := s.askMaster(p.addr())
		if err == nil {
			return addr
		}
		errs = append(errs, err)
	}
	t.Fatalf("no sentinel names master %s: %v", s.MasterName, errors.Join(errs...))
	return ""
}

// FailoverURL returns the go-redis failover URL of the sentinels:
// redis://FIRST?master_name=NAME&addr=SECOND&addr=..., for
// redis.ParseFailoverURL.
func (s *Sentinel) FailoverURL() string {
	var b strings.Builder
	b.WriteString("redis://" + s.SentinelAddrs[0] + "?master_name=" + s.MasterName)
	for _, a := range s.SentinelAddrs[1:] {
		b.WriteString("&addr=" + a)
	}
	return b.String()
}

// Client returns a go-redis failover client built from FailoverURL, closed
// when the test ends. It finds the master through the sentinels and follows it
// across a failover; commands on connections to a killed master fail until it
// has, so a test retries them.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseFailoverURL(s.FailoverURL())
	if err != nil {
		t.Fatalf("parse failover URL %q: %v", s.FailoverURL(), err)
	}
	c := redis.NewFailoverClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// KillMaster kills the process of the master the sentinels name, with
// SIGKILL, and returns its address.
func (s *Sentinel) KillMaster(t testing.TB) string {
	t.Helper()
	addr := s.MasterAddr(t)
	s.Node(t, addr).Kill()
	return addr
}

// WaitFailover waits until every running sentinel names the same master, other
// than old, and that node reports role:master; it returns the new master's
// address. It does not wait for other replicas to follow the new master.
func (s *Sentinel) WaitFailover(t testing.TB, old string, timeout time.Duration) string {
	t.Helper()
	var master string
	waitFor(t, timeout, "failover from "+old, func() error {
		var addrs []string
		for _, p := range s.sentinels {
			if !p.running() {
				continue
			}
			a, err := s.askMaster(p.addr())
			if err != nil {
				return err
			}
			if a == old {
				return fmt.Errorf("sentinel %s still names %s", p.addr(), old)
			}
			addrs = append(addrs, a)
		}
		if len(addrs) == 0 {
			return errors.New("no sentinel runs")
		}
		for i, a := range addrs[1:] {
			if a != addrs[0] {
				return fmt.Errorf("sentinels name %s and %s", addrs[0], addrs[i+1])
			}
		}
		role, err := infoField(addrs[0], "role")
		if err != nil {
			return err
		}
		if role != "master" {
			return fmt.Errorf("%s: role %s, want master", addrs[0], role)
		}
		master = addrs[0]
		return nil
	})
	return master
}

// Node returns the data node at addr, which must be one of NodeAddrs.
func (s *Sentinel) Node(t testing.TB, addr string) *SentinelNode {
	t.Helper()
	n, ok := s.nodes[addr]
	if !ok {
		t.Fatalf("no data node at %s (nodes: %v)", addr, s.NodeAddrs)
	}
	return n
}

// Kill kills the node's process with SIGKILL; its data is lost. Killing a
// node that does not run does nothing.
func (n *SentinelNode) Kill() { n.p.kill() }

// Pause stops the node's process with SIGSTOP: it keeps its connections open
// but answers nothing, like a hung or cut-off node. The sentinels see it down
// after down-after-milliseconds; a replica falls behind. Resume undoes it.
func (n *SentinelNode) Pause(t testing.TB) {
	t.Helper()
	n.signal(t, syscall.SIGSTOP)
}

// Resume continues a node stopped by Pause with SIGCONT.
func (n *SentinelNode) Resume(t testing.TB) {
	t.Helper()
	n.signal(t, syscall.SIGCONT)
}

func (n *SentinelNode) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if !n.p.running() {
		t.Fatalf("signal %v to %s: not running", sig, n.Addr)
	}
	if err := n.p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, n.Addr, err)
	}
}

// Restart kills the node if it runs and starts it again, empty, on the same
// port: as a replica of the master the sentinels name or, if they name this
// node, as a master. A killed master thus comes back as a replica of the one
// that replaced it, as Sentinel would make it after a few seconds. Restart
// returns once the node answers and, when it is a replica of a running master,
// once its link to the master is up.
func (n *SentinelNode) Restart(t testing.TB) {
	t.Helper()
	n.p.kill()
	master := n.s.MasterAddr(t)
	var replicaOf string
	if master != n.Addr {
		replicaOf = master
	}
	n.p.args = dataNodeArgs(n.p.dir, replicaOf)
	if err := n.p.start(); err != nil {
		t.Fatalf("restart %s: %v", n.Addr, err)
	}
	if m, ok := n.s.nodes[master]; ok && replicaOf != "" && m.p.running() {
		waitFor(t, 10*time.Second, "replica "+n.Addr+" link to master "+master, func() error {
			return replicaLinkUp(n.Addr)
		})
	}
}

// startNode starts a data node in a directory of its own under root, as a
// replica of replicaOf unless that is empty.
func (s *Sentinel) startNode(t testing.TB, root, name, replicaOf string) *SentinelNode {
	t.Helper()
	dir := mkdir(t, root, name)
	p := &redisProc{name: name, dir: dir, args: dataNodeArgs(dir, replicaOf)}
	s.procs = append(s.procs, p)
	p.startFresh(t)
	n := &SentinelNode{Addr: p.addr(), s: s, p: p}
	s.nodes[n.Addr] = n
	s.NodeAddrs = append(s.NodeAddrs, n.Addr)
	return n
}

// dataNodeArgs returns the redis-server arguments of a data node, but for --port.
func dataNodeArgs(dir, replicaOf string) []string {
	args := []string{
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", dir, "--loglevel", "notice",
		"--replica-priority", "100",
		// Full syncs stream at once instead of waiting 5s for more replicas.
		"--repl-diskless-sync-delay", "0",
	}
	if replicaOf != "" {
		host, port, _ := net.SplitHostPort(replicaOf)
		args = append(args, "--replicaof", host, port)
	}
	return args
}

// startSentinel writes the config of sentinel i, which monitors master, and
// starts it.
func (s *Sentinel) startSentinel(t testing.TB, root string, i int, master string, quorum int) {
	t.Helper()
	name := "sentinel" + strconv.Itoa(i)
	dir := mkdir(t, root, name)
	host, port, _ := net.SplitHostPort(master)
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf(`sentinel resolve-hostnames no
sentinel monitor %[1]s %[2]s %[3]s %[4]d
sentinel down-after-milliseconds %[1]s %[5]d
sentinel failover-timeout %[1]s %[6]d
sentinel parallel-syncs %[1]s 1
`, s.MasterName, host, port, quorum, sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatalf("write %s: %v", conf, err)
	}
	p := &redisProc{name: name, dir: dir, args: []string{
		conf, "--sentinel",
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", dir, "--loglevel", "notice",
	}}
	s.procs = append(s.procs, p)
	p.startFresh(t)
	s.sentinels = append(s.sentinels, p)
	s.SentinelAddrs = append(s.SentinelAddrs, p.addr())
}

// sentinelReady reports why the sentinel at addr is not yet ready to fail
// master over: it must name master, list replicas healthy replicas and know
// others other sentinels.
func (s *Sentinel) sentinelReady(addr, master string, replicas, others int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := redis.NewSentinelClient(probeOptions(addr))
	defer c.Close()
	m, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil {
		return fmt.Errorf("get-master-addr-by-name: %w", err)
	}
	if got := net.JoinHostPort(m[0], m[1]); got != master {
		return fmt.Errorf("names master %s, want %s", got, master)
	}
	rs, err := c.Replicas(ctx, s.MasterName).Result()
	if err != nil {
		return fmt.Errorf("replicas: %w", err)
	}
	healthy := 0
	for _, r := range rs {
		if r["flags"] == "slave" && r["master-link-status"] == "ok" {
			healthy++
		}
	}
	if healthy != replicas {
		return fmt.Errorf("knows %d healthy replicas, want %d: %v", healthy, replicas, rs)
	}
	ss, err := c.Sentinels(ctx, s.MasterName).Result()
	if err != nil {
		return fmt.Errorf("sentinels: %w", err)
	}
	if len(ss) != others {
		return fmt.Errorf("knows %d other sentinels, want %d", len(ss), others)
	}
	return nil
}

// askMaster asks the sentinel at addr which master it names.
func (s *Sentinel) askMaster(addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := redis.NewSentinelClient(probeOptions(addr))
	defer c.Close()
	m, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil {
		return "", fmt.Errorf("sentinel %s: get-master-addr-by-name %s: %w", addr, s.MasterName, err)
	}
	return net.JoinHostPort(m[0], m[1]), nil
}

func (s *Sentinel) killAll() {
	for _, p := range s.procs {
		p.kill()
	}
}

// logTails logs the last n lines of every process's log.
func (s *Sentinel) logTails(t testing.TB, n int) {
	for _, p := range s.procs {
		t.Logf("last lines of %s (%s) log:\n%s", p.name, p.addr(), tail(p.logPath(), n))
	}
}

// replicaLinkUp reports why the replica at addr has no link to its master.
func replicaLinkUp(addr string) error {
	status, err := infoField(addr, "master_link_status")
	if err != nil {
		return err
	}
	if status != "up" {
		return fmt.Errorf("%s: master_link_status:%s", addr, status)
	}
	return nil
}

// infoField returns a field of the INFO replication of the node at addr.
func infoField(addr, field string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := redis.NewClient(probeOptions(addr))
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return "", fmt.Errorf("%s: info replication: %w", addr, err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: info replication has no %s", addr, field)
}

// probeOptions are the options of the short-lived clients the harness polls
// with: quick to give up on a killed or paused process.
func probeOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:        addr,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: -1,
	}
}

// waitFor calls ready every 50ms until it returns nil, and fails the test
// with ready's last error after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mkdir(t testing.TB, root, name string) string {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	return dir
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// redisProc is one redis-server process, data node or sentinel, that logs to
// redis.log in its directory.
type redisProc struct {
	name string
	dir  string
	args []string // all but --port
	port int

	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result, once done is closed
}

func (p *redisProc) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
}

func (p *redisProc) logPath() string { return filepath.Join(p.dir, "redis.log") }

// startFresh starts the process on a free port; if it exits at once, most
// likely because another process took the port meanwhile, it tries another.
func (p *redisProc) startFresh(t testing.TB) {
	t.Helper()
	var err error
	for range 3 {
		p.port = FreePort(t)
		if err = p.start(); err == nil {
			return
		}
		if p.running() {
			break
		}
	}
	t.Fatalf("start %s: %v\n%s", p.name, err, tail(p.logPath(), 20))
}

// start runs the process on p.port and waits until it answers PING.
func (p *redisProc) start() error {
	f, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command("redis-server", slices.Concat(p.args, []string{"--port", strconv.Itoa(p.port)})...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() { // owned by p: kill waits for it
		p.waitErr = cmd.Wait()
		close(done)
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("%s on %s exited: %v", p.name, p.addr(), p.waitErr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c := redis.NewClient(probeOptions(p.addr()))
		err := c.Ping(ctx).Err()
		c.Close()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s on %s not ready: %w", p.name, p.addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *redisProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL, which also ends a process stopped by SIGSTOP, and waits
// for the process to exit.
func (p *redisProc) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}
