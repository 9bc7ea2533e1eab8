package benchproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaries are the programs the benchmark runs as processes.
type binaries struct {
	natsServer, worker, sandbox string // built from this module
	redisServer                 string // from PATH
	// defaultConcurrency is WORKER_CONCURRENCY's default, read from
	// `worker -h`, so "default settings" follow the worker as it changes.
	defaultConcurrency int
}

// buildBinaries builds nats-server (from the module's dependency), the
// worker and the sandbox into dir, and skips the benchmark when
// redis-server is not installed.
func buildBinaries(b *testing.B, dir string) binaries {
	b.Helper()
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		b.Skip("redis-server is not in PATH; the benchmark runs a real one")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		b.Fatalf("go is not in PATH: %v", err)
	}
	root, err := moduleRoot()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(goBin, "build", "-o", dir+string(filepath.Separator),
		"github.com/nats-io/nats-server/v2", "./cmd/worker", "./cmd/sandbox")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	bins := binaries{
		natsServer:  filepath.Join(dir, "nats-server"),
		worker:      filepath.Join(dir, "worker"),
		sandbox:     filepath.Join(dir, "sandbox"),
		redisServer: redis,
	}
	for _, p := range []string{bins.natsServer, bins.worker, bins.sandbox} {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("go build: %v", err)
		}
	}
	out, err := exec.Command(bins.worker, "-h").Output()
	if err != nil {
		b.Fatalf("worker -h: %v", err)
	}
	if bins.defaultConcurrency, err = usageDefault(out, "WORKER_CONCURRENCY"); err != nil {
		b.Fatalf("worker -h: %v", err)
	}
	return bins
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// usageDefault reads a variable's default from the worker's usage table
// ("VARIABLE  DEFAULT  DESCRIPTION").
func usageDefault(usage []byte, name string) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(usage))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == name {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("%s default %q is not a number", name, f[1])
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s is not in the usage", name)
}

// proc is a server the benchmark started, with its output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// startProc runs path with args and the given environment (and PATH only:
// nothing of the benchmark's own environment, such as REDIS_URL, leaks in).
// The process is stopped when the benchmark ends (SIGTERM, then SIGKILL
// after 10s), and the tail of its log printed if the benchmark failed.
func startProc(b *testing.B, dir, name, path string, args []string, env ...string) *proc {
	b.Helper()
	p := &proc{name: name, logPath: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	f, err := os.Create(p.logPath)
	if err != nil {
		b.Fatal(err)
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		b.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	b.Cleanup(func() {
		p.stop()
		if b.Failed() {
			b.Logf("--- %s (pid %d, %v), last lines of %s:\n%s", name, p.pid(), p.waitErr, p.logPath, tail(p.logPath, 30))
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exitedErr is nil while the process runs.
func (p *proc) exitedErr() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v (log %s)", p.name, p.waitErr, p.logPath)
	default:
		return nil
	}
}

// stop ends the process: SIGTERM, then SIGKILL if it has not exited in 10s.
func (p *proc) stop() {
	if p.exitedErr() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitUntil calls ready every 50ms until it returns nil, failing the
// benchmark after timeout or as soon as one of procs exits.
func waitUntil(b *testing.B, what string, timeout time.Duration, ready func() error, procs ...*proc) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		for _, p := range procs {
			if perr := p.exitedErr(); perr != nil {
				b.Fatalf("waiting for %s: %v", what, perr)
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(b *testing.B) int {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// httpGet returns the body of a 200 answer to GET url.
func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// metricValue reads one unlabelled sample from a Prometheus text exposition.
func metricValue(exposition []byte, name string) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not exposed", name)
}

// histogramTotals sums the _sum and _count of every series of the histogram
// name whose labels contain match ("" for all of them).
func histogramTotals(exposition []byte, name, match string) (sum, count float64) {
	sc := bufio.NewScanner(bytes.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var total *float64
		var rest string
		if r, ok := strings.CutPrefix(line, name+"_sum"); ok {
			total, rest = &sum, r
		} else if r, ok := strings.CutPrefix(line, name+"_count"); ok {
			total, rest = &count, r
		} else {
			continue
		}
		labels, value, ok := strings.Cut(rest, " ")
		if !ok || (labels != "" && labels[0] != '{') || !strings.Contains(labels, match) {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			*total += v
		}
	}
	return sum, count
}

// describeTimings tells, from the worker's /metrics before and after a
// phase, the mean time of a command's handling (from its delivery to its
// ack), of its gateway calls and of its claim and completion in Redis, and
// what a slot spends between two commands (cycle, concurrency ÷ rate, less
// the handling): pulling the next one. A cycle of 0 (slots not all busy, as
// at half load) leaves that out.
func describeTimings(before, after []byte, cycle float64) string {
	mean := func(name, match string) (float64, float64) {
		s0, n0 := histogramTotals(before, name, match)
		s1, n1 := histogramTotals(after, name, match)
		if n1 <= n0 {
			return 0, 0
		}
		return (s1 - s0) / (n1 - n0) * 1000, n1 - n0
	}
	handling, n := mean("payworker_command_duration_seconds", "")
	gateway, calls := mean("payworker_gateway_request_duration_seconds", "")
	claim, _ := mean("payworker_idempotency_store_duration_seconds", `operation="claim"`)
	complete, _ := mean("payworker_idempotency_store_duration_seconds", `operation="complete"`)
	if n == 0 {
		return "no command handled"
	}
	gw := gateway * calls / n
	out := fmt.Sprintf("handling %.1f ms a command: gateway %.1f (%.2f calls), claim %.1f, complete %.1f, the rest %.1f",
		handling, gw, calls/n, claim, complete, handling-gw-claim-complete)
	if cycle > 0 {
		out += fmt.Sprintf("; a slot's cycle (concurrency ÷ rate) %.1f ms, so %.1f ms between two commands", cycle*1000, cycle*1000-handling)
	}
	return out
}

// clockTicks is the kernel's USER_HZ (getconf CLK_TCK), the unit of the CPU
// times in /proc/<pid>/stat and /proc/stat.
var clockTicks = sync.OnceValue(func() time.Duration {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return time.Second / 100
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n <= 0 {
		return time.Second / 100
	}
	return time.Second / time.Duration(n)
})

// cpuTime is a process's user plus system CPU time so far, from
// /proc/<pid>/stat (pid 0 reads this process).
func cpuTime(pid int) (time.Duration, error) {
	name := "self"
	if pid != 0 {
		name = strconv.Itoa(pid)
	}
	raw, err := os.ReadFile("/proc/" + name + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which may hold spaces, in parentheses.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%s/stat: no command name", name)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: %d fields", name, len(f))
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%s/stat: %w", name, err)
	}
	return time.Duration(utime+stime) * clockTicks(), nil
}

// machineCPU is the whole machine's CPU time so far, from /proc/stat's
// first line: busy (anything but idle and iowait), of which system (kernel:
// system, irq, softirq), and total, summed over every core.
type machineCPU struct{ busy, system, total time.Duration }

func readMachineCPU() (machineCPU, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	// user nice system idle iowait irq softirq steal ...
	v := make([]int64, len(f)-1)
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return machineCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	var total int64
	for _, x := range v[:min(len(v), 8)] { // guest times are inside user already
		total += x
	}
	tick := clockTicks()
	return machineCPU{
		busy:   time.Duration(total-v[3]-v[4]) * tick,
		system: time.Duration(v[2]+v[5]+v[6]) * tick,
		total:  time.Duration(total) * tick,
	}, nil
}

// perfEnv names the directory where, when it is set, the worker's CPU is
// recorded with `perf record -g` during each burst and, in a file of its
// own ("-half-"), at half load (the worker serves no pprof endpoint). Read
// the result with `perf report -i FILE`. perfProcEnv names another process
// to record instead ("nats-server", "redis-server" or "sandbox"), and then
// during the gateway floor too, to compare.
const (
	perfEnv     = "BENCHPROC_PERF"
	perfProcEnv = "BENCHPROC_PERF_PROC"
)

// perfRecord starts perf on pid, writing dir/name.perf.data, when perfEnv
// is set and perf is installed; stop ends it (SIGINT) and waits.
func perfRecord(b *testing.B, pid int, name string) (stop func()) {
	b.Helper()
	dir := os.Getenv(perfEnv)
	if dir == "" {
		return func() {}
	}
	perf, err := exec.LookPath("perf")
	if err != nil {
		b.Fatalf("%s is set but perf is not in PATH", perfEnv)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, name+".perf.data")
	cmd := exec.Command(perf, "record", "-g", "-F", "999", "-p", strconv.Itoa(pid), "-o", out)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		b.Fatalf("perf record: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // let perf attach
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait() // perf may report the SIGINT as its exit status
		if st, serr := os.Stat(out); serr != nil || st.Size() == 0 {
			b.Logf("perf record: %v: %s", err, bytes.TrimSpace(log.Bytes()))
			return
		}
		b.Logf("CPU profile: perf report -i %s", out)
	}
}

// perfProc is the process perfProcEnv names, the worker by default.
func (s *system) perfProc() *proc {
	switch os.Getenv(perfProcEnv) {
	case "", "worker":
		return s.worker
	case "nats-server":
		return s.nats
	case "redis-server":
		return s.redis
	case "sandbox":
		return s.sandbox
	default:
		s.b.Fatalf("%s=%q: want worker, nats-server, redis-server or sandbox", perfProcEnv, os.Getenv(perfProcEnv))
		return nil
	}
}
