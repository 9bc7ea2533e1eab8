package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a JetStream cluster of in-process NATS servers for one test,
// each with its own name, store directory under t.TempDir(), client port and
// cluster port, routed to every other. A node keeps its name, ports and
// store across Kill and Restart, so it rejoins as the same Raft peer.
//
// Every route between two nodes runs through a proxy of the cluster's, one
// per direction, so that Kill can cut a node off before shutting it down:
// an in-process Shutdown first hands the leadership of every Raft group the
// node leads to another peer, which is a clean stop (what SIGTERM does), not
// a crash. Kill is the crash (what kill -9 does): the other nodes lose the
// node at once, hear nothing from it, and elect new leaders only after their
// election timeouts (4 to 9 s in nats-server's defaults). Stop is the clean
// stop.
//
// Its methods call t.Fatal and must be called from the test's goroutine,
// except URL, Names, Running and Leader, which are safe anywhere.
type NATSCluster struct {
	// Name is the cluster's name.
	Name string

	t     testing.TB
	mu    sync.Mutex
	nodes []*clusterNode
}

// clusterNode is one server of a NATSCluster.
type clusterNode struct {
	name        string
	storeDir    string
	clientPort  int
	clusterPort int
	// out holds the proxies of this node's routes to the others, by name:
	// the node dials them, and they dial the other's cluster port.
	out map[string]*routeProxy
	srv *server.Server // nil while down
}

// StartNATSCluster starts n servers with JetStream, routed to one another,
// and returns once they have elected a JetStream meta leader and every
// server is current with it. All are shut down when the test ends.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartNATSCluster(%d): want at least 1 server", n)
	}
	c := &NATSCluster{Name: "payworker-test", t: t}
	root := t.TempDir()
	ports := freePorts(t, 2*n)
	for i := range n {
		c.nodes = append(c.nodes, &clusterNode{
			name:        fmt.Sprintf("n%d", i+1),
			storeDir:    filepath.Join(root, fmt.Sprintf("n%d", i+1)),
			clientPort:  ports[2*i],
			clusterPort: ports[2*i+1],
			out:         make(map[string]*routeProxy),
		})
	}
	// The proxies listen on ports of their own, taken before the servers
	// bind theirs: none can take a server's.
	for _, from := range c.nodes {
		for _, to := range c.nodes {
			if from == to {
				continue
			}
			p, err := startRouteProxy(net.JoinHostPort("127.0.0.1", strconv.Itoa(to.clusterPort)), ports)
			if err != nil {
				t.Fatalf("route proxy %s→%s: %v", from.name, to.name, err)
			}
			from.out[to.name] = p
		}
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			c.shutdown(nd)
			for _, p := range nd.out {
				p.close()
			}
		}
	})
	for _, nd := range c.nodes {
		c.start(nd)
	}
	c.WaitJetStream(30 * time.Second)
	return c
}

// start runs nd's server on its ports and store.
func (c *NATSCluster) start(nd *clusterNode) {
	c.t.Helper()
	var routes []string
	for _, name := range slices.Sorted(maps.Keys(nd.out)) {
		routes = append(routes, "nats://"+nd.out[name].addr())
	}
	opts := &server.Options{
		ServerName: nd.name,
		Host:       "127.0.0.1",
		Port:       nd.clientPort,
		JetStream:  true,
		StoreDir:   nd.storeDir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 1 << 20,
		Cluster: server.ClusterOpts{
			Name: c.Name,
			Host: "127.0.0.1",
			Port: nd.clusterPort,
			// The servers gossip the routes they learn of, and would dial
			// one another directly, past the proxies, at the address each
			// advertises: advertise one that answers nothing, so that
			// every route is one of the configured, proxied ones.
			Advertise: "127.0.0.1:1",
		},
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		c.t.Fatalf("nats server %s: %v", nd.name, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		c.t.Fatalf("nats server %s: not ready after 20s (client port %d, cluster port %d)", nd.name, nd.clientPort, nd.clusterPort)
	}
	c.mu.Lock()
	nd.srv = srv
	c.mu.Unlock()
}

// shutdown stops nd's server if it runs.
func (c *NATSCluster) shutdown(nd *clusterNode) {
	c.mu.Lock()
	srv := nd.srv
	nd.srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// node returns the node named name, failing the test if there is none.
func (c *NATSCluster) node(name string) *clusterNode {
	c.t.Helper()
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	c.t.Fatalf("nats cluster: no server named %q (have %s)", name, strings.Join(c.Names(), ", "))
	return nil
}

// Names returns the servers' names, n1, n2, …
func (c *NATSCluster) Names() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.name)
	}
	return out
}

// URL returns every server's client URL, comma-separated, as NATS_URL takes
// them; the servers that are down are listed too.
func (c *NATSCluster) URL() string {
	var urls []string
	for _, nd := range c.nodes {
		urls = append(urls, "nats://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(nd.clientPort)))
	}
	return strings.Join(urls, ",")
}

// Server returns the running server named name, or nil while it is down.
func (c *NATSCluster) Server(name string) *server.Server {
	nd := c.node(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	return nd.srv
}

// Running reports whether the server named name is up.
func (c *NATSCluster) Running(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd.srv != nil
		}
	}
	return false
}

// Connect opens a client connection to the whole cluster (it reconnects to
// another server when its own goes down), closed when the test ends.
func (c *NATSCluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect nats cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Kill crashes the server named name, as kill -9 would: its routes are cut
// first, so the others hear no step-down and elect new leaders for what it
// led only after their election timeouts; then it is shut down (without lame
// duck mode), which closes its clients' connections. Its store is kept for
// Restart.
func (c *NATSCluster) Kill(name string) {
	c.t.Helper()
	nd := c.node(name)
	for _, other := range c.nodes {
		if other == nd {
			for _, p := range nd.out {
				p.cut(true)
			}
			continue
		}
		other.out[nd.name].cut(true)
	}
	c.shutdown(nd)
}

// Stop shuts the server named name down cleanly (without lame duck mode):
// the Raft groups it leads hand their leadership to another peer first.
func (c *NATSCluster) Stop(name string) {
	c.t.Helper()
	c.shutdown(c.node(name))
}

// Restart starts the server named name again, after Kill or Stop, on the
// same ports and store directory, with its routes restored.
func (c *NATSCluster) Restart(name string) {
	c.t.Helper()
	nd := c.node(name)
	c.shutdown(nd)
	for _, other := range c.nodes {
		if other == nd {
			for _, p := range nd.out {
				p.cut(false)
			}
			continue
		}
		other.out[nd.name].cut(false)
	}
	c.start(nd)
}

// WaitJetStream waits until the running servers have a JetStream meta
// leader, each is current with it, and the leader can place streams on
// every one of them (it has their statistics: until then it refuses to
// place R3 on three servers).
func (c *NATSCluster) WaitJetStream(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var running []*server.Server
		c.mu.Lock()
		for _, nd := range c.nodes {
			if nd.srv != nil {
				running = append(running, nd.srv)
			}
		}
		c.mu.Unlock()
		placeable, current := 0, true
		for _, s := range running {
			if s.JetStreamIsLeader() {
				placeable = len(s.JetStreamClusterPeers())
			}
			current = current && s.JetStreamIsCurrent()
		}
		if placeable == len(running) && current {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats cluster: no JetStream meta leader with every server current and known after %v", timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Leader returns the name of the server that leads stream, as the stream's
// info says ("" while it has none).
func (c *NATSCluster) Leader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", errors.New("stream info has no cluster section: not a clustered stream")
	}
	return info.Cluster.Leader, nil
}

// WaitStreamLeader waits until stream has a leader among the running servers
// with every running replica current, and returns the leader's name.
func (c *NATSCluster) WaitStreamLeader(js jetstream.JetStream, stream string, timeout time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := streamInfo(ctx, js, stream)
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && c.Running(info.Cluster.Leader) {
			current := true
			for _, r := range info.Cluster.Replicas {
				if c.Running(r.Name) && !r.Current {
					current = false
				}
			}
			if current {
				return info.Cluster.Leader
			}
			err = errors.New("a running replica is not current")
		} else if err == nil {
			err = errors.New("no leader among the running servers")
		}
		last = err
		if time.Now().After(deadline) {
			c.t.Fatalf("stream %s: no leader after %v: %v", stream, timeout, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func streamInfo(ctx context.Context, js jetstream.JetStream, stream string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// below the kernel's ephemeral range: a server restarted on its port must
// find it free, and the local end of an outgoing connection (a client, a
// route, a proxy) made while the server was down may be given any port of
// that range, which a listener then cannot bind.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := 10000, ephemeralLow()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no %d free ports between %d and %d", n, lo, hi)
		}
		p := lo + rand.IntN(hi-lo)
		if slices.Contains(ports, p) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		defer l.Close() // all held until all are chosen: they are distinct
		ports = append(ports, p)
	}
	return ports
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// ip_local_port_range; 32768 where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
		return n
	}
	return 32768
}

// routeProxy forwards the TCP connections made to it to one address. Cut
// closes them all, and the ones made while it stays cut, as a crashed
// server's peer sees its connections end.
type routeProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	isCut  bool
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// startRouteProxy listens on a free port not among avoid, and forwards to
// target.
func startRouteProxy(target string, avoid []int) (*routeProxy, error) {
	var ln net.Listener
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		if !slices.Contains(avoid, l.Addr().(*net.TCPAddr).Port) {
			ln = l
			break
		}
		defer l.Close() // held until a port is found, so it is not offered again
	}
	p := &routeProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *routeProxy) addr() string { return p.ln.Addr().String() }

func (p *routeProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.isCut || p.closed {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.pipe(in)
	}
}

// pipe dials the target for in and copies both ways until either side ends.
func (p *routeProxy) pipe(in net.Conn) {
	defer p.wg.Done()
	out, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		p.drop(in)
		return
	}
	p.mu.Lock()
	if p.isCut || p.closed {
		p.mu.Unlock()
		out.Close()
		p.drop(in)
		return
	}
	p.conns[out] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
	p.drop(in)
	p.drop(out)
	<-done
}

func (p *routeProxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// cut closes every connection and refuses new ones (true), or lets them
// through again (false).
func (p *routeProxy) cut(on bool) {
	p.mu.Lock()
	p.isCut = on
	var conns []net.Conn
	if on {
		for c := range p.conns {
			conns = append(conns, c)
		}
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// close stops the proxy and waits for its goroutines.
func (p *routeProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cut(true)
	p.wg.Wait()
}
