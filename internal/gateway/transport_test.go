package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"1", time.Second},
		{" 120 ", 2 * time.Minute},
		{"-3", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999", time.Duration(1<<63 - 1)},
		{"Thu, 02 Jan 2025 03:05:05 GMT", time.Minute},
		{"Thursday, 02-Jan-25 03:05:05 GMT", time.Minute},
		{"Thu Jan  2 03:05:05 2025", time.Minute},
		{"Thu, 02 Jan 2025 03:00:00 GMT", 0},
	}
	for _, tt := range tests {
		if got := ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// dialError stands for a dial error wrapping an errno.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial tcp: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func TestClassifyTransport(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	refused := &dialError{syscall.ECONNREFUSED}
	boom := errors.New("boom")
	tests := []struct {
		name    string
		ctx     context.Context
		op      Operation
		written bool
		err     error
		want    Outcome
		wantIs  error
	}{
		// From the paymentoptions adapter's tests.
		{"refused, not written", context.Background(), Capture, false, refused, Retryable, syscall.ECONNREFUSED},
		{"EOF after write", context.Background(), Capture, true, io.EOF, Unknown, io.EOF},
		{"reset after write", context.Background(), Capture, true, syscall.ECONNRESET, Unknown, syscall.ECONNRESET},
		{"timeout after write", context.Background(), Capture, true, context.DeadlineExceeded, Unknown, context.DeadlineExceeded},
		{"timeout before write", context.Background(), Capture, false, context.DeadlineExceeded, Retryable, context.DeadlineExceeded},
		{"caller cancelled after write", cancelled, Capture, true, errors.New("net/http: request canceled"), Unknown, context.Canceled},
		{"caller cancelled before write", cancelled, Capture, false, errors.New("net/http: request canceled"), Retryable, context.Canceled},
		// From the sibs adapter's tests.
		{"not written", context.Background(), Void, false, boom, Retryable, boom},
		{"written", context.Background(), Void, true, boom, Unknown, boom},
		{"cancelled after writing", cancelled, Void, true, boom, Unknown, context.Canceled},
		{"cancelled before writing", cancelled, Void, false, boom, Retryable, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ClassifyTransport(tt.ctx, "gw", tt.op, tt.written, tt.err)
			if got.Outcome != tt.want || !errors.Is(got.Err, tt.wantIs) || got.HTTPStatus != 0 {
				t.Errorf("ClassifyTransport(written %v, %v) = %s, %v; want %s wrapping %v", tt.written, tt.err, got.Outcome, got.Err, tt.want, tt.wantIs)
			}
		})
	}
	if got := ClassifyTransport(context.Background(), "sibs", Void, true, boom).Err.Error(); got != "sibs: void: sent, no answer: boom" {
		t.Errorf("written: Err = %q", got)
	}
	if got := ClassifyTransport(context.Background(), "paymentoptions", Capture, false, boom).Err.Error(); got != "paymentoptions: capture: not sent: boom" {
		t.Errorf("not written: Err = %q", got)
	}
}

func TestCheckBaseURL(t *testing.T) {
	tests := []struct {
		url  string
		want error
	}{
		{"https://api-dev.paymentoptions.com/api/v1", nil},
		{"https://stargate-cer.qly.site1.sibs.pt", nil},
		{"http://127.0.0.1:8099/api/v1", nil},
		{"http://127.9.8.7:8099/api/v1", nil},
		{"http://localhost:8099", nil},
		{"http://LOCALHOST:8099", nil},
		{"http://[::1]:8099/api/v1", nil},
		{"http://api-dev.paymentoptions.com/api/v1", ErrURLNotLoopback},
		{"http://10.0.0.1/api/v1", ErrURLNotLoopback},
		{"http://localhost.example.com/api/v1", ErrURLNotLoopback},
		{"http://[::2]/api/v1", ErrURLNotLoopback},
		{"ftp://127.0.0.1/api/v1", ErrURLScheme},
		{"api-dev.paymentoptions.com/api/v1", ErrURLScheme},
		{"https:///api/v1", ErrURLHost},
		{"https://user:pw@api-dev.paymentoptions.com/api/v1", ErrURLUserInfo},
		{"http://user:pw@10.0.0.1", ErrURLUserInfo},
		{"https://api-dev.paymentoptions.com/api/v1?x=1", ErrURLQuery},
		{"https://api-dev.paymentoptions.com/api/v1?", ErrURLQuery},
		{"https://api-dev.paymentoptions.com/api/v1#f", ErrURLQuery},
		{"http://10.0.0.1/?x=1", ErrURLQuery},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := CheckBaseURL(u); got != tt.want {
			t.Errorf("CheckBaseURL(%s) = %v, want %v", tt.url, got, tt.want)
		}
	}
	if got := ErrURLNotLoopback.Error(); !strings.Contains(got, "http:// is accepted only for a loopback host") {
		t.Errorf("ErrURLNotLoopback = %q", got)
	}
}

func TestNoRedirects(t *testing.T) {
	given := &http.Client{Timeout: time.Minute}
	c := NoRedirects(given, 0)
	if c == given || given.CheckRedirect != nil || c.Timeout != time.Minute {
		t.Errorf("NoRedirects changed or did not copy its client")
	}
	if err := c.CheckRedirect(nil, nil); err != http.ErrUseLastResponse {
		t.Errorf("CheckRedirect = %v, want http.ErrUseLastResponse", err)
	}
	if d := NoRedirects(nil, 0); d.Transport == nil || d.Transport == http.DefaultTransport {
		t.Errorf("NoRedirects(nil, 0).Transport = %v, want a clone of the default transport", d.Transport)
	}
}

func TestSend(t *testing.T) {
	var got *http.Request
	var gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/large":
			w.Header().Set("Retry-After", "3")
			_, _ = w.Write(make([]byte, maxAnswer+1))
		default:
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"ok":true}`)
		}
	}))
	defer srv.Close()
	h := HTTP{Client: NoRedirects(srv.Client(), 0), Timeout: 5 * time.Second}
	header := http.Header{"X-Key": {"k"}}

	ex := h.Send(context.Background(), http.MethodPost, srv.URL+"/op", header, []byte(`{"a":1}`))
	if ex.Status != http.StatusCreated || string(ex.Body) != `{"ok":true}` || !ex.Written || ex.Err != nil {
		t.Errorf("POST = %+v", ex)
	}
	if got.Header.Get("X-Key") != "k" || got.Header.Get("Accept") != "application/json" ||
		got.Header.Get("Content-Type") != "application/json" || gotBody != `{"a":1}` {
		t.Errorf("POST sent %v, body %q", got.Header, gotBody)
	}
	if len(header) != 1 {
		t.Errorf("Send changed the header it was given: %v", header)
	}

	ex = h.Send(context.Background(), http.MethodGet, srv.URL+"/status", nil, nil)
	if ex.Status != http.StatusCreated || got.Header.Get("Content-Type") != "" || got.Header.Get("Accept") != "application/json" {
		t.Errorf("GET = %+v, sent %v", ex, got.Header)
	}

	ex = h.Send(context.Background(), http.MethodPost, srv.URL+"/redirect", nil, []byte(`{}`))
	if ex.Status != http.StatusFound || got.URL.Path != "/redirect" {
		t.Errorf("redirect: status %d, last path %s; want 302 not followed", ex.Status, got.URL.Path)
	}

	ex = h.Send(context.Background(), http.MethodGet, srv.URL+"/large", nil, nil)
	if ex.Status != http.StatusOK || ex.Err == nil || !strings.Contains(ex.Err.Error(), "answer larger than") || ex.Header.Get("Retry-After") != "3" {
		t.Errorf("large answer: status %d, err %v", ex.Status, ex.Err)
	}

	// Nothing listens: the request is never written.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()
	ex = h.Send(context.Background(), http.MethodPost, closed+"/op", nil, []byte(`{}`))
	if ex.Status != 0 || ex.Written || ex.Err == nil {
		t.Errorf("refused: %+v, want status 0, not written, an error", ex)
	}

	ex = h.Send(context.Background(), http.MethodPost, "http://127.0.0.1:1/\x7f", nil, nil)
	if ex.Status != 0 || ex.Written || ex.Err == nil {
		t.Errorf("bad URL: %+v, want status 0, not written, an error", ex)
	}
}

func TestSendWrittenThenDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		_, _ = conn.Read(buf)
		_ = conn.Close()
	}()
	h := HTTP{Client: NoRedirects(nil, 0), Timeout: 5 * time.Second}
	ex := h.Send(context.Background(), http.MethodPost, "http://"+ln.Addr().String()+"/op", nil, []byte(`{}`))
	if ex.Status != 0 || !ex.Written || ex.Err == nil {
		t.Errorf("dropped after the request: %+v, want status 0, written, an error", ex)
	}
}

// TestReadAnswer: the answer is read whole whatever Content-Length says,
// up to maxAnswer+1 bytes, and a declared length costs one buffer.
func TestReadAnswer(t *testing.T) {
	body := strings.Repeat("x", 1100)
	for _, tc := range []struct {
		name string
		body string
		cl   int64
		want int
	}{
		{"exact length", body, int64(len(body)), len(body)},
		{"unknown length", body, -1, len(body)},
		{"length understated", body, 10, len(body)},
		{"length overstated", body, 5000, len(body)},
		{"empty", "", 0, 0},
		{"larger than allowed", strings.Repeat("y", maxAnswer+100), maxAnswer + 100, maxAnswer + 1},
		{"larger than allowed, unknown length", strings.Repeat("y", maxAnswer+100), -1, maxAnswer + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAnswer(strings.NewReader(tc.body), tc.cl)
			if err != nil || len(got) != tc.want || string(got) != tc.body[:tc.want] {
				t.Errorf("readAnswer = %d bytes, %v; want the first %d", len(got), err, tc.want)
			}
		})
	}
	errRead := errors.New("connection reset")
	if _, err := readAnswer(io.MultiReader(strings.NewReader("{"), iotest.ErrReader(errRead)), -1); !errors.Is(err, errRead) {
		t.Errorf("readAnswer after a read error = %v, want it", err)
	}
	r := strings.NewReader(body)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(body)
		if _, err := readAnswer(r, int64(len(body))); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("readAnswer of a %d-byte answer with its length: %.0f allocations, want at most 2 (the buffer and the limit)", len(body), allocs)
	}
}
