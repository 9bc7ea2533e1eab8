package natsconn

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestSettingsRedacted: no way of printing or logging Settings shows the
// password.
func TestSettingsRedacted(t *testing.T) {
	s := Settings{URL: "nats://u:urlpass@h:4222", User: "payworker", Password: "pwSecret42"}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("nats", slog.Any("settings", s))
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), b.String()} {
		if strings.Contains(out, "pwSecret42") || strings.Contains(out, "urlpass") {
			t.Errorf("settings printed with a password: %s", out)
		}
	}
}

// TestCheck: each problem is a *SettingError naming its variable, all of
// them at once.
func TestCheck(t *testing.T) {
	files := map[string]string{"ca.pem": "no certificate here", "seed": "not a seed"}
	read := func(p string) ([]byte, error) {
		if c, ok := files[p]; ok {
			return []byte(c), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	err := Settings{URL: "nats://h", User: "u", NKeySeedFile: "seed", TLSCA: "ca.pem", TLSCert: "c.pem", InboxPrefix: "a.*"}.Check(read)
	for _, want := range []string{
		"NATS_NKEY_SEED_FILE: set only one of NATS_NKEY_SEED_FILE, NATS_USER",
		"NATS_PASSWORD_FILE: required with NATS_USER=u",
		"NATS_NKEY_SEED_FILE: file seed holds no NKEY user seed",
		"NATS_INBOX_PREFIX: \"a.*\" is not a subject prefix",
		"NATS_TLS_CA: file ca.pem holds no PEM certificate",
		"NATS_TLS_KEY: required with NATS_TLS_CERT",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check = %v\nwant it to say %q", err, want)
		}
	}
	var se *SettingError
	if !errors.As(err, &se) || !errors.Is(err, ErrTLSPair) {
		t.Errorf("Check = %v, want *SettingError values and ErrTLSPair", err)
	}
	if err := (Settings{URL: "nats://h"}).Check(read); err != nil {
		t.Errorf("Check of a URL alone = %v, want nil", err)
	}
}

// TestExplainLogin: a refused login names the credential that was sent.
func TestExplainLogin(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{User: "payworker", Password: "pw1"}, `NATS_USER: the server refused user "payworker"`},
		{Settings{NKeySeedFile: "/s.nk"}, "NATS_NKEY_SEED_FILE: the server refused the NKEY of the seed in /s.nk"},
		{Settings{Creds: "/c.creds"}, "NATS_CREDS: the server refused the credentials in /c.creds"},
		{Settings{}, "NATS_USER: the server wants credentials"},
	} {
		tc.s.URL = "nats://h:4222"
		got := tc.s.Explain(nats.ErrAuthorization).Error()
		if !strings.Contains(got, tc.want) || strings.Contains(got, "pw1") {
			t.Errorf("Explain(%v) = %s, want %q and no password", tc.s, got, tc.want)
		}
	}
	if ce := (Settings{URL: "nats://h:1"}).Explain(nats.ErrNoServers); !ce.Unreachable() || ce.Var != VarURL {
		t.Errorf("Explain(ErrNoServers) = %+v, want unreachable, naming NATS_URL", ce)
	}
}

// TestExplainClosedAfterHandshake: with TLS 1.3 a server that refuses the
// client's certificate (or its absence) may close the connection before the
// client reads its alert; nats.go reports a broken pipe or EOF after the
// handshake, which names NATS_TLS_CERT like the alert does.
func TestExplainClosedAfterHandshake(t *testing.T) {
	closed := fmt.Errorf("%w: connection closed by remote after TLS handshake: %w", nats.ErrTLS,
		&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE})
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{URL: "tls://h:4222"}, "NATS_TLS_CERT: the server wants a client certificate; set NATS_TLS_CERT and NATS_TLS_KEY"},
		{Settings{URL: "tls://h:4222", TLSCert: "/c.pem", TLSKey: "/k.pem"}, "NATS_TLS_CERT: the server refused the client certificate /c.pem"},
	} {
		if got := tc.s.Explain(closed).Error(); !strings.Contains(got, tc.want) {
			t.Errorf("Explain(closed after the handshake) with %+v = %s, want %q", tc.s, got, tc.want)
		}
	}
}
