package main

import (
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/payworker/payworker/internal/natsconn"
)

// natsSettings is how the worker connects to NATS_URL: its credentials, TLS
// files and inbox prefix.
func natsSettings(c Config) natsconn.Settings {
	return natsconn.Settings{
		URL:          c.NATSURL,
		Creds:        c.NATSCreds,
		User:         c.NATSUser,
		Password:     c.NATSPassword.Reveal(),
		NKeySeedFile: c.NATSNKeySeedFile,
		TLSCA:        c.NATSTLSCA,
		TLSCert:      c.NATSTLSCert,
		TLSKey:       c.NATSTLSKey,
		InboxPrefix:  c.NATSInboxPrefix,
		Name:         "payworker-worker " + c.WorkerID,
	}
}

// natsVars are the settings that say how to reach a NATS_URL; the embedded
// server takes none of them.
var natsVars = []string{"NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_NKEY_SEED_FILE", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"}

// checkNATS checks the NATS connection settings together, reading their
// files with readFile: at most one login, a user with its password, a client
// certificate with its key, files that hold what they should. Without
// NATS_URL they must be unset: the embedded server has neither TLS nor
// users. Each error is a *VarError.
func checkNATS(c Config, readFile func(string) ([]byte, error), valid func(...string) bool) []error {
	if !valid(append([]string{"NATS_URL", "NATS_INBOX_PREFIX"}, natsVars...)...) {
		return nil
	}
	if c.EmbeddedNATS() {
		s := natsSettings(c)
		set := map[string]bool{"NATS_CREDS": s.Creds != "", "NATS_USER": s.User != "", "NATS_PASSWORD": s.Password != "",
			"NATS_NKEY_SEED_FILE": s.NKeySeedFile != "", "NATS_TLS_CA": s.TLSCA != "", "NATS_TLS_CERT": s.TLSCert != "", "NATS_TLS_KEY": s.TLSKey != ""}
		var errs []error
		for _, v := range natsVars {
			if set[v] {
				errs = append(errs, &VarError{Var: v, Err: errors.New("set, but NATS_URL is not: the embedded NATS server has neither TLS nor users")})
			}
		}
		return errs
	}
	err := natsSettings(c).Check(readFile)
	if err == nil {
		return nil
	}
	var errs []error
	for _, e := range unjoin(err) {
		var se *natsconn.SettingError
		if errors.As(e, &se) {
			e = &VarError{Var: se.Var, Err: se.Err}
		}
		errs = append(errs, e)
	}
	return errs
}

// unjoin is the errors that errors.Join joined into err, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// natsErrorLogger logs what the NATS server tells the worker asynchronously:
// a refused login after a reconnect (naming the setting, never its value), a
// permission violation (a subject the payworker role lacks), or another
// error.
func natsErrorLogger(s natsconn.Settings, log *slog.Logger) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		attrs := []any{slog.Any("error", err)}
		if sub != nil {
			attrs = append(attrs, slog.String("subject", sub.Subject))
		}
		switch ce := s.Explain(err); {
		case errors.Is(err, nats.ErrPermissionViolation):
			log.Error("NATS permission violation: the worker's user may not use this subject (see deploy/nats/roles.conf)", attrs...)
		case ce.Var != "":
			log.Error("NATS refused the worker: "+ce.Hint, append(attrs, slog.String("variable", ce.Var))...)
		default:
			log.Error("NATS error", attrs...)
		}
	}
}

// natsConnected describes a new connection for the log: where, as whom (the
// kind of login and the user, never a secret), over TLS or not, and the
// reply prefix the role's permissions must allow.
func natsConnected(nc *nats.Conn, s natsconn.Settings) []any {
	login := "none"
	switch {
	case s.Creds != "":
		login = "creds " + s.Creds
	case s.NKeySeedFile != "":
		login = "nkey seed " + s.NKeySeedFile
	case s.User != "":
		login = "user " + s.User
	}
	_, tlsErr := nc.TLSConnectionState()
	return []any{slog.String("url", nc.ConnectedUrlRedacted()), slog.String("login", login),
		slog.Bool("tls", tlsErr == nil), slog.String("inbox_prefix", s.InboxPrefix)}
}
