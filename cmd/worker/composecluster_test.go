package main

import (
	"flag"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestComposeCluster checks the NATS servers of docker-compose.cluster.yml
// without a Docker engine: each one's entrypoint exports the roles'
// passwords from the secrets it is given and mounts deploy/nats; its
// nats-server command line, read by nats-server's own flag parsing, names
// the server after the service and routes to the other two; and the three,
// started from those options (on free ports instead of the containers'),
// form a JetStream cluster that the workers' user, with the payworker
// password, reaches.
func TestComposeCluster(t *testing.T) {
	c, err := loadComposeFile(t, "docker-compose.cluster.yml", map[string]string{"PAYMENTOPTIONS_BASE_URL": "https://gateway.example/api/v1"})
	if err != nil {
		t.Fatal(err)
	}
	passwords := map[string]string{}
	for _, role := range []string{"payworker", "orderservice", "operator"} {
		v := strings.ToUpper(role) + "_NATS_PASSWORD"
		passwords[role] = "pw" + role + "42"
		t.Setenv(v, passwords[role])
	}
	w := c.Services["worker"]
	if w.Environment["NATS_USER"] != "payworker" || w.Environment["NATS_PASSWORD_FILE"] != "/run/secrets/payworker_nats_password" ||
		!slices.Contains(w.Secrets, "payworker_nats_password") {
		t.Errorf("the workers log in as %q with %q (secrets %q), want payworker with its secret",
			w.Environment["NATS_USER"], w.Environment["NATS_PASSWORD_FILE"], w.Secrets)
	}

	names := []string{"nats-1", "nats-2", "nats-3"}
	exec := regexp.MustCompile(`exec (nats-server .*)$`)
	clusterAddrs := map[string]string{}
	for _, n := range names {
		clusterAddrs[n] = freeAddr(t)
	}
	var servers []*server.Server
	for _, n := range names {
		svc, ok := c.Services[n]
		if !ok {
			t.Fatalf("no service %s", n)
		}
		entry := strings.Join(svc.Entrypoint, " ")
		for role := range passwords {
			secret := role + "_nats_password"
			if !strings.Contains(entry, strings.ToUpper(role)+`_NATS_PASSWORD="$(cat /run/secrets/`+secret+`)"`) || !slices.Contains(svc.Secrets, secret) {
				t.Errorf("%s does not export the %s password from its secret %s", n, role, secret)
			}
		}
		if !slices.Contains(svc.Volumes, "./deploy/nats:/etc/nats:ro") {
			t.Errorf("%s does not mount deploy/nats at /etc/nats: %q", n, svc.Volumes)
		}
		m := exec.FindStringSubmatch(entry)
		if m == nil {
			t.Fatalf("%s's entrypoint runs no nats-server: %q", n, entry)
		}
		line := strings.NewReplacer(`"$NATS_SERVER_NAME"`, svc.Environment["NATS_SERVER_NAME"], `"$NATS_ROUTES"`, svc.Environment["NATS_ROUTES"],
			"/etc/nats/", filepath.Join(repoRoot, "deploy/nats")+"/").Replace(m[1])
		args := strings.Fields(line)[1:]
		// ConfigureOptions keeps the command line's options in the package
		// variable FlagSnapshot, which every later config reload in this
		// process would apply: put it back.
		snapshot := server.FlagSnapshot
		opts, err := server.ConfigureOptions(flag.NewFlagSet("nats-server", flag.ContinueOnError), args, nil, nil, nil)
		server.FlagSnapshot = snapshot
		if err != nil {
			t.Fatalf("%s: nats-server %s: %v", n, strings.Join(args, " "), err)
		}
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.Hostname())
		}
		others := slices.DeleteFunc(slices.Clone(names), func(o string) bool { return o == n })
		if opts.ServerName != n || opts.Cluster.Name != "payworker" || !slices.Equal(routes, others) || !opts.JetStream || opts.StoreDir != "/data" {
			t.Errorf("%s: server %q, cluster %q, routes to %q, JetStream %v in %q; want %s in payworker routing to %q, JetStream in /data",
				n, opts.ServerName, opts.Cluster.Name, routes, opts.JetStream, opts.StoreDir, n, others)
		}
		// The same options, on this machine's free ports.
		opts.Port, opts.HTTPPort, opts.StoreDir = -1, -1, t.TempDir()
		host, port, _ := net.SplitHostPort(clusterAddrs[n])
		opts.Cluster.Host = host
		if opts.Cluster.Port, err = strconv.Atoi(port); err != nil {
			t.Fatal(err)
		}
		opts.Routes = nil
		for _, o := range others {
			opts.Routes = append(opts.Routes, server.RoutesFromStr("nats://"+clusterAddrs[o])...)
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		go srv.Start()
		t.Cleanup(srv.Shutdown)
		servers = append(servers, srv)
	}
	for i, srv := range servers {
		if !srv.ReadyForConnections(20 * time.Second) {
			t.Fatalf("%s did not start", names[i])
		}
	}
	nc, err := nats.Connect(servers[0].ClientURL(), nats.UserInfo("payworker", passwords["payworker"]), nats.CustomInboxPrefix("_INBOX_payworker"))
	if err != nil {
		t.Fatalf("the workers' login: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := js.AccountInfo(t.Context())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream of the cluster as payworker: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, srv := range servers {
		if n := srv.NumRoutes(); n < 2 {
			t.Errorf("%s has %d routes, want 2", names[i], n)
		}
	}
}
