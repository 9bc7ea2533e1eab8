package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
)

// repoRoot is the repository from cmd/worker, where go test runs.
const repoRoot = "../.."

// composeFile is the part of a compose file that TestComposeDemo reads.
type composeFile struct {
	Services map[string]struct {
		Profiles    []string          `yaml:"profiles"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Ports       []string          `yaml:"ports"`
		Command     []string          `yaml:"command"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Secrets     []string          `yaml:"secrets"`
	} `yaml:"services"`
	Secrets map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

// composeVar is a compose variable reference: ${NAME}, ${NAME:-default},
// ${NAME-default}, ${NAME:?message} or ${NAME?message}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate substitutes compose variables from vars as docker compose does
// (an empty value counts as unset for the forms with a colon); a required
// variable that is unset is an error carrying its message.
func interpolate(s string, vars map[string]string) (string, error) {
	var err error
	out := composeVar.ReplaceAllStringFunc(s, func(ref string) string {
		m := composeVar.FindStringSubmatch(ref)
		v, set := vars[m[1]]
		unset := !set || (strings.HasPrefix(m[2], ":") && v == "")
		switch strings.TrimPrefix(m[2], ":") {
		case "-":
			if unset {
				return m[3]
			}
		case "?":
			if unset {
				err = errors.New(m[3])
				return ""
			}
		}
		return v
	})
	return strings.ReplaceAll(out, "$$", "$"), err // $$ is compose's escaped $
}

// readEnvFile reads a compose env file: NAME=value lines, # comments.
func readEnvFile(t *testing.T, name string) map[string]string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not NAME=value", name, line)
		}
		vars[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vars
}

// loadCompose reads docker-compose.yml with every string interpolated from
// vars, as `docker compose --env-file` would.
func loadCompose(t *testing.T, vars map[string]string) (composeFile, error) {
	t.Helper()
	return loadComposeFile(t, "docker-compose.yml", vars)
}

// loadComposeFile reads the compose file name as loadCompose does.
func loadComposeFile(t *testing.T, name string, vars map[string]string) (composeFile, error) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	var raw yaml.Node
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	var errs []error
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			v, err := interpolate(n.Value, vars)
			if err != nil {
				errs = append(errs, err)
			}
			n.Value = v
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&raw)
	var c composeFile
	if err := raw.Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c, errors.Join(errs...)
}

// workerConfig parses the worker service's environment as the worker would
// inside its container: /run/secrets/NAME is the compose secret NAME's file.
func workerConfig(t *testing.T, c composeFile) (Config, error) {
	t.Helper()
	readFile := func(name string) ([]byte, error) {
		secret, ok := strings.CutPrefix(name, "/run/secrets/")
		s, declared := c.Secrets[secret]
		if !ok || !declared {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return os.ReadFile(filepath.Join(repoRoot, s.File))
	}
	e := c.Services["worker"].Environment
	return parseConfig(nil, func(k string) string { return e[k] }, readFile)
}

// TestComposeDemo checks docker-compose.yml's demo profile without a Docker
// engine (CI also runs `docker-compose config` on it): with
// deploy/demo/demo.env the worker service's environment and secrets are a
// valid worker configuration that calls the sandbox service over http with
// GATEWAY_ALLOW_HTTP (without the env file the same URL is refused); the
// services, ports and files that the sandbox, the demo traffic, Prometheus
// and Grafana name agree with each other and exist.
func TestComposeDemo(t *testing.T) {
	demoEnv := readEnvFile(t, filepath.Join(repoRoot, "deploy/demo/demo.env"))
	c, err := loadCompose(t, demoEnv)
	if err != nil {
		t.Fatalf("docker-compose.yml with deploy/demo/demo.env: %v", err)
	}

	// The worker: the sandbox over plain http, admitted by the setting.
	cfg, err := workerConfig(t, c)
	if err != nil {
		t.Fatalf("the demo worker's configuration: %v", err)
	}
	var plain []string
	for _, g := range cfg.PlainHTTPGateways() {
		plain = append(plain, g.Gateway+" "+g.URL.String())
	}
	base, err := url.Parse(demoEnv["PAYMENTOPTIONS_BASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"paymentoptions " + base.String()}; !slices.Equal(plain, want) {
		t.Errorf("demo worker's plain http gateways = %q, want %q", plain, want)
	}
	if got := cfg.PaymentOptionsAPIKey.Reveal(); got != c.Services["sandbox"].Environment["SANDBOX_API_KEY"] || got == "" {
		t.Errorf("demo worker's PaymentOptions key %q, want the sandbox's SANDBOX_API_KEY %q", got, c.Services["sandbox"].Environment["SANDBOX_API_KEY"])
	}
	if got := cfg.PaymentOptionsXAPIKey.Reveal(); got != c.Services["sandbox"].Environment["SANDBOX_X_API_KEY"] || got == "" {
		t.Errorf("demo worker's PaymentOptions x-api-key %q, want the sandbox's SANDBOX_X_API_KEY %q", got, c.Services["sandbox"].Environment["SANDBOX_X_API_KEY"])
	}
	sandboxHost, sandboxPort, _ := net.SplitHostPort(base.Host)
	if _, ok := c.Services[sandboxHost]; !ok {
		t.Errorf("PAYMENTOPTIONS_BASE_URL %s names host %q, not a compose service", base, sandboxHost)
	}
	if _, port, _ := net.SplitHostPort(c.Services[sandboxHost].Environment["SANDBOX_ADDR"]); port != sandboxPort {
		t.Errorf("the sandbox listens on port %q, the workers call %q", port, sandboxPort)
	}
	if got := c.Services["demo-traffic"].Environment["SANDBOX_URL"]; got != base.String() {
		t.Errorf("demo-traffic's SANDBOX_URL = %q, want the workers' gateway %q", got, base)
	}

	// Without the demo's env file, the same http URL is refused and the
	// gateway URL is required.
	prod, err := loadCompose(t, map[string]string{"PAYMENTOPTIONS_BASE_URL": base.String()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := workerConfig(t, prod); err == nil || !strings.Contains(err.Error(), "PAYMENTOPTIONS_BASE_URL: http:// is allowed for loopback hosts only") {
		t.Errorf("the production worker with an http gateway URL: %v, want the loopback-only error", err)
	}
	if _, err := loadCompose(t, nil); err == nil || !strings.Contains(err.Error(), "PAYMENTOPTIONS_BASE_URL") {
		t.Errorf("docker-compose.yml with no PAYMENTOPTIONS_BASE_URL: %v, want an error naming it", err)
	}

	// Profiles: the demo adds the sandbox, its traffic, Prometheus and
	// Grafana; the production stack has none of them.
	for name, want := range map[string][]string{
		"nats": nil, "redis": nil, "worker": nil,
		"sandbox": {"demo"}, "demo-traffic": {"demo"},
		"prometheus": {"demo", "monitoring"}, "grafana": {"demo", "monitoring"},
	} {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		if !slices.Equal(s.Profiles, want) {
			t.Errorf("service %s profiles %q, want %q", name, s.Profiles, want)
		}
	}

	// Every file a service mounts from the repository exists.
	mounts := map[string]string{} // container path -> repository path
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, rest, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, "./") {
				continue // a named volume
			}
			dst, _, _ := strings.Cut(rest, ":")
			mounts[dst] = src
			if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}

	// Prometheus: its rule files are mounted beside its config, and it
	// scrapes the worker service on the port of the workers' HTTP_ADDR.
	promConfigPath := "/etc/prometheus/prometheus.yml"
	src, ok := mounts[promConfigPath]
	if !ok {
		t.Fatalf("no mount of %s", promConfigPath)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, src))
	if err != nil {
		t.Fatal(err)
	}
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName      string `yaml:"job_name"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatal(err)
	}
	if len(prom.RuleFiles) == 0 {
		t.Errorf("%s loads no rule files", src)
	}
	for _, r := range prom.RuleFiles {
		if got := mounts[path.Join(path.Dir(promConfigPath), r)]; got != "./deploy/prometheus/alerts.yml" {
			t.Errorf("rule file %s is mounted from %q, want ./deploy/prometheus/alerts.yml", r, got)
		}
	}
	_, workerPort, _ := net.SplitHostPort(c.Services["worker"].Environment["HTTP_ADDR"])
	scraped := false
	for _, sc := range prom.ScrapeConfigs {
		for _, d := range sc.DNSSDConfigs {
			if slices.Contains(d.Names, "worker") && fmt.Sprint(d.Port) == workerPort {
				scraped = true
			}
		}
	}
	if !scraped {
		t.Errorf("%s does not scrape the worker service on port %s (its HTTP_ADDR)", src, workerPort)
	}

	// NATS: the server's configuration, mounted from deploy/nats, reads
	// with the passwords its entrypoint exports from the secrets, and its
	// users are the ones the workers and the demo traffic log in as, with
	// the passwords of their secret files.
	natsSvc := c.Services["nats"]
	entry := strings.Join(natsSvc.Entrypoint, " ")
	m := regexp.MustCompile(`exec nats-server -c (\S+)`).FindStringSubmatch(entry)
	if m == nil {
		t.Fatalf("the nats service's entrypoint %q runs no nats-server -c <file>", entry)
	}
	confDir, confFile := path.Split(m[1])
	confSrc, ok := mounts[path.Clean(confDir)]
	if !ok {
		t.Fatalf("nats-server's configuration %s is not mounted from the repository", m[1])
	}
	secretFile := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(repoRoot, c.Secrets[name].File))
		if err != nil {
			t.Fatalf("secret %s: %v", name, err)
		}
		return string(b)
	}
	for _, role := range []string{"payworker", "orderservice", "operator"} {
		v, secret := strings.ToUpper(role)+"_NATS_PASSWORD", role+"_nats_password"
		if !strings.Contains(entry, v+`="$(cat /run/secrets/`+secret+`)"`) || !slices.Contains(natsSvc.Secrets, secret) {
			t.Errorf("the nats service does not export %s from its secret %s", v, secret)
		}
		t.Setenv(v, secretFile(secret))
	}
	opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, confSrc, confFile))
	if err != nil {
		t.Fatalf("nats-server's configuration %s: %v", m[1], err)
	}
	if !opts.JetStream || opts.StoreDir != "/data" || !slices.Contains(natsSvc.Volumes, "nats-data:/data") {
		t.Errorf("nats-server: JetStream %v in %q, volumes %q; want JetStream on the nats-data volume at /data", opts.JetStream, opts.StoreDir, natsSvc.Volumes)
	}
	users := map[string]string{}
	for _, u := range opts.Users {
		users[u.Username] = u.Password
	}
	if cfg.NATSUser != "payworker" || users["payworker"] == "" || users["payworker"] != cfg.NATSPassword.Reveal() {
		t.Errorf("the workers log in as %q with a password the server does not give that user", cfg.NATSUser)
	}
	demo := c.Services["demo-traffic"]
	pwFile, _ := strings.CutPrefix(demo.Environment["NATS_PASSWORD_FILE"], "/run/secrets/")
	if demo.Environment["NATS_USER"] != "operator" || !slices.Contains(demo.Secrets, pwFile) || users["operator"] != secretFile(pwFile) {
		t.Errorf("the demo traffic logs in as %q with secret %q, want operator with the server's password", demo.Environment["NATS_USER"], pwFile)
	}
	// The configuration runs: the workers' user logs in and reaches
	// JetStream (on a temporary store and free ports instead of the
	// container's).
	opts.StoreDir, opts.Port, opts.HTTPPort = t.TempDir(), -1, -1
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server with %s: %v", m[1], err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server with %s did not start", m[1])
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(cfg.NATSUser, cfg.NATSPassword.Reveal()), nats.CustomInboxPrefix(cfg.NATSInboxPrefix))
	if err != nil {
		t.Fatalf("the workers' login: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Errorf("JetStream account info as %s: %v", cfg.NATSUser, err)
	}

	// Grafana: the provisioned data source is the prometheus service, and
	// the dashboards provider reads the directory the dashboard is mounted in.
	var ds struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, mounts, "/etc/grafana/provisioning", "datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
		t.Fatalf("provisioned data sources %+v, want one of type prometheus", ds.Datasources)
	}
	if u, err := url.Parse(ds.Datasources[0].URL); err != nil || u.Host != "prometheus:9090" || !slices.Contains(c.Services["prometheus"].Ports, "127.0.0.1:9090:9090") {
		t.Errorf("data source URL %q, want the prometheus service on 9090", ds.Datasources[0].URL)
	}
	var dp struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, mounts, "/etc/grafana/provisioning", "dashboards/payworker.yml", &dp)
	if len(dp.Providers) != 1 {
		t.Fatalf("dashboard providers %+v, want one", dp.Providers)
	}
	if got := mounts[path.Join(dp.Providers[0].Options.Path, "payworker.json")]; got != "./deploy/grafana/payworker.json" {
		t.Errorf("the dashboard provider reads %s, where %q is mounted, want ./deploy/grafana/payworker.json", dp.Providers[0].Options.Path, got)
	}
	if home := c.Services["grafana"].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; mounts[home] != "./deploy/grafana/payworker.json" {
		t.Errorf("Grafana's home dashboard %s is not the mounted dashboard", home)
	}
}

// readYAML reads the file at rel under the container directory dir, which a
// service mounts from the repository, into v.
func readYAML(t *testing.T, mounts map[string]string, dir, rel string, v any) {
	t.Helper()
	src, ok := mounts[dir]
	if !ok {
		t.Fatalf("no mount of %s", dir)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, src, rel))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

func TestInterpolate(t *testing.T) {
	vars := map[string]string{"A": "a", "E": ""}
	for _, tc := range []struct{ in, want, err string }{
		{"${A}", "a", ""},
		{"x${A}y${A}", "xaya", ""},
		{"${B:-b}", "b", ""},
		{"${E:-e}", "e", ""},
		{"${E-e}", "", ""},
		{"${A:-b}", "a", ""},
		{"${B:?need B}", "", "need B"},
		{"${E:?need E}", "", "need E"},
		{"${B}", "", ""},
		{"${B:-./secrets}/key", "./secrets/key", ""},
	} {
		got, err := interpolate(tc.in, vars)
		if got != tc.want || fmt.Sprint(err) != map[bool]string{true: "<nil>", false: tc.err}[tc.err == ""] {
			t.Errorf("interpolate(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}
