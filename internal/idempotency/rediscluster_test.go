//go:build unix

package idempotency_test

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/payworker/payworker/internal/idempotency"
	"github.com/payworker/payworker/internal/idempotency/storetest"
	"github.com/payworker/payworker/internal/testenv"
)

// TestRedisClusterStore runs the contract suite on a 3-master Redis Cluster
// through a cluster client: every script runs on the master of its keys'
// slot, and the suite's scopes land on different masters.
func TestRedisClusterStore(t *testing.T) {
	c := testenv.StartRedisCluster(t, 3)
	rdb := c.Client(t)
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		return idempotency.NewRedis(rdb, idempotency.RedisOptions{
			Prefix: fmt.Sprintf("cluster%d:", prefixes.Add(1)), TTL: time.Hour, Registry: newRegistry(t)})
	}, storetest.Options{Lose: loseRedisRecord(rdb)})
}

// TestRedisScriptsDeclareEveryKey runs the contract suite while MONITOR
// records what the server executes: every key a script's redis.call
// touches must be one the EVAL or EVALSHA declared in KEYS (Redis Cluster
// routes by them; proxies and Redis-compatible servers refuse or misroute
// undeclared keys), and the keys of one call must share one hash tag. A
// script that reads an undeclared key is run first, to show that the check
// sees it.
func TestRedisScriptsDeclareEveryKey(t *testing.T) {
	r := testenv.StartRedis(t)
	if !r.Own {
		t.Skip("REDIS_URL is set: MONITOR on a shared server would see other tests' scripts")
	}
	rdb := r.Client(t)
	m := startMonitor(t, r.Addr)

	undeclared := r.Prefix + "{probe}:undeclared"
	if err := rdb.Eval(t.Context(), "redis.call('GET', KEYS[1]); return redis.call('GET', ARGV[1])",
		[]string{r.Prefix + "{probe}:declared"}, undeclared).Err(); err != nil && err != redis.Nil {
		t.Fatalf("probe script: %v", err)
	}
	t.Run("contract", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) idempotency.Store {
			s, _ := newRedisStore(t, r, rdb, time.Hour)
			return s
		}, storetest.Options{Lose: loseRedisRecord(rdb)})
	})

	var probeSeen bool
	calls := 0
	for _, v := range checkScriptKeys(m.stop(t, rdb)) {
		switch {
		case v.call == "":
			calls = v.calls
		case strings.Contains(v.problem, undeclared):
			probeSeen = true
		default:
			t.Errorf("%s: %s", v.call, v.problem)
		}
	}
	if !probeSeen {
		t.Errorf("the probe script's undeclared key %s was not reported: the check sees nothing", undeclared)
	}
	if calls < 100 {
		t.Errorf("MONITOR saw %d script calls, want the contract suite's (hundreds)", calls)
	}
}

// monitor is a MONITOR connection and the lines it has read.
type monitor struct {
	conn net.Conn
	done chan struct{}

	mu    sync.Mutex
	lines []string
	err   error
}

// startMonitor opens a MONITOR connection to addr; stop ends it.
func startMonitor(t *testing.T, addr string) *monitor {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	rd := bufio.NewReaderSize(conn, 1<<20)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatalf("MONITOR: %v", err)
	}
	if line, err := rd.ReadString('\n'); err != nil || strings.TrimSpace(line) != "+OK" {
		t.Fatalf("MONITOR = %q, %v; want +OK", line, err)
	}
	m := &monitor{conn: conn, done: make(chan struct{})}
	go func() { // owned by m: stop waits for it
		defer close(m.done)
		for {
			line, err := rd.ReadString('\n')
			m.mu.Lock()
			if err != nil {
				m.err = err
				m.mu.Unlock()
				return
			}
			m.lines = append(m.lines, strings.TrimSuffix(strings.TrimPrefix(line, "+"), "\r\n"))
			m.mu.Unlock()
		}
	}()
	return m
}

// stop sends a marker through rdb, waits until MONITOR has shown it (and so
// everything before it), closes the connection and returns the lines.
func (m *monitor) stop(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	marker := fmt.Sprintf("monitor-end-%d", time.Now().UnixNano())
	if err := rdb.Echo(t.Context(), marker).Err(); err != nil {
		t.Fatalf("ECHO: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		n := len(m.lines)
		seen := n > 0 && strings.Contains(m.lines[n-1], marker)
		err := m.err
		m.mu.Unlock()
		if seen {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("MONITOR never showed the end marker: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.conn.Close()
	<-m.done
	return m.lines
}

// scriptKeyProblem is a key a script touched without declaring it, or a
// call whose keys span hash tags; the entry with call "" only counts the
// script calls seen.
type scriptKeyProblem struct {
	call    string
	problem string
	calls   int
}

// checkScriptKeys reads MONITOR lines: an EVAL or EVALSHA line is followed
// by the lines of the commands its script ran ("[0 lua]").
func checkScriptKeys(lines []string) []scriptKeyProblem {
	var out []scriptKeyProblem
	var call string
	var declared map[string]bool
	calls := 0
	for _, line := range lines {
		source, args, ok := parseMonitorLine(line)
		if !ok || len(args) == 0 {
			continue
		}
		if source != "lua" {
			call, declared = "", nil
			switch name := strings.ToLower(args[0]); {
			case (name == "eval" || name == "evalsha") && len(args) >= 3:
				n, err := strconv.Atoi(args[2])
				if err != nil || 3+n > len(args) {
					out = append(out, scriptKeyProblem{call: line, problem: "cannot read numkeys"})
					continue
				}
				calls++
				call = fmt.Sprintf("%s(%s)", name, strings.Join(args[3:3+n], ", "))
				declared = map[string]bool{}
				tags := map[string]bool{}
				for _, k := range args[3 : 3+n] {
					declared[k] = true
					tags[hashTag(k)] = true
				}
				if len(tags) > 1 {
					out = append(out, scriptKeyProblem{call: call, problem: fmt.Sprintf("declared keys span hash tags %v", tags)})
				}
			}
			continue
		}
		if declared == nil {
			out = append(out, scriptKeyProblem{call: line, problem: "a script command after no EVAL or EVALSHA"})
			continue
		}
		keys, known := touchedKeys(args)
		if !known {
			out = append(out, scriptKeyProblem{call: call, problem: "runs " + args[0] + ", which this check does not know: teach touchedKeys its keys"})
		}
		for _, k := range keys {
			if !declared[k] {
				out = append(out, scriptKeyProblem{call: call, problem: fmt.Sprintf("%s touches %s, not declared in KEYS", strings.ToUpper(args[0]), k)})
			}
		}
	}
	return append(out, scriptKeyProblem{calls: calls})
}

// touchedKeys returns the keys of a command a script runs; known is false
// for a command it does not know.
func touchedKeys(args []string) (keys []string, known bool) {
	switch strings.ToUpper(args[0]) {
	case "TIME", "INFO":
		return nil, true
	case "GET", "SET", "PEXPIRE", "PTTL", "PEXPIREAT":
		if len(args) > 1 {
			return args[1:2], true
		}
	case "DEL", "EXISTS", "UNLINK":
		return args[1:], true
	}
	return nil, false
}

// hashTag is what Redis Cluster hashes of key: the part between the first
// '{' and the next '}', if not empty, else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// parseMonitorLine splits `1700000000.123456 [0 127.0.0.1:5555] "evalsha"
// "sha" …` into its source ("127.0.0.1:5555", "lua") and its arguments,
// unquoted as redis-cli would (\", \\, \n, \r, \t, \a, \b, \xHH).
func parseMonitorLine(line string) (source string, args []string, ok bool) {
	open := strings.IndexByte(line, '[')
	end := strings.IndexByte(line, ']')
	if open < 0 || end < open {
		return "", nil, false
	}
	_, source, _ = strings.Cut(line[open+1:end], " ")
	rest := line[end+1:]
	for {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			return source, args, true
		}
		if rest[0] != '"' {
			return "", nil, false
		}
		var b strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			c := rest[i]
			if c != '\\' || i+1 >= len(rest) {
				b.WriteByte(c)
				continue
			}
			i++
			switch rest[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'x':
				if i+2 < len(rest) {
					if v, err := strconv.ParseUint(rest[i+1:i+3], 16, 8); err == nil {
						b.WriteByte(byte(v))
						i += 2
						continue
					}
				}
				b.WriteByte('x')
			default:
				b.WriteByte(rest[i])
			}
		}
		if i >= len(rest) {
			return "", nil, false
		}
		args = append(args, b.String())
		rest = rest[i+1:]
	}
}
