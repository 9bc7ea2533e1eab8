package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"go.opentelemetry.io/otel/trace"

	"github.com/payworker/payworker/internal/gateway"
	"github.com/payworker/payworker/internal/tracing"
)

// readCA reads a PEM file of certificate authorities into a pool of their
// own (the system's authorities are not in it).
func readCA(readFile func(string) ([]byte, error), path string) (*x509.CertPool, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// readKeyPair reads a PEM certificate and its private key. Its errors are
// *VarError values naming the variable of the file at fault, and never
// hold the key.
func readKeyPair(readFile func(string) ([]byte, error), certVar, certPath, keyVar, keyPath string) (*tls.Certificate, error) {
	certPEM, err := readFile(certPath)
	if err != nil {
		return nil, &VarError{Var: certVar, Err: err}
	}
	keyPEM, err := readFile(keyPath)
	if err != nil {
		return nil, &VarError{Var: keyVar, Err: err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &VarError{Var: certVar, Err: fmt.Errorf("with %s: %w", keyVar, err)}
	}
	return &cert, nil
}

// checkGatewayCAs reads PAYMENTOPTIONS_TLS_CA and SIBS_TLS_CA into c. Each
// needs its gateway configured with an https URL: the in-process sandbox
// and loopback http:// URLs use no TLS.
func checkGatewayCAs(c *Config, readFile func(string) ([]byte, error), valid func(...string) bool) []error {
	var errs []error
	bad := func(name string, err error) { errs = append(errs, &VarError{Var: name, Err: err}) }
	if c.PaymentOptionsTLSCA != "" && valid("PAYMENTOPTIONS_BASE_URL") {
		switch {
		case c.Sandbox():
			bad("PAYMENTOPTIONS_TLS_CA", errors.New("set, but PAYMENTOPTIONS_BASE_URL is not (the in-process sandbox uses no TLS)"))
		case c.PaymentOptionsBaseURL.Scheme != "https":
			bad("PAYMENTOPTIONS_TLS_CA", fmt.Errorf("set, but PAYMENTOPTIONS_BASE_URL is %s://, which does not use TLS", c.PaymentOptionsBaseURL.Scheme))
		default:
			roots, err := readCA(readFile, c.PaymentOptionsTLSCA)
			if err != nil {
				bad("PAYMENTOPTIONS_TLS_CA", err)
			}
			c.PaymentOptionsRoots = roots
		}
	}
	if c.SIBSTLSCA != "" && valid("SIBS_BASE_URL", "SIBS_TOKEN_URL") {
		https := c.SIBSConfigured() && c.SIBSBaseURL.Scheme == "https" || c.SIBSTokenURL != nil && c.SIBSTokenURL.Scheme == "https"
		switch {
		case !c.SIBSConfigured():
			bad("SIBS_TLS_CA", errors.New("set, but SIBS_BASE_URL is not"))
		case !https:
			bad("SIBS_TLS_CA", fmt.Errorf("set, but SIBS_BASE_URL is %s://, which does not use TLS", c.SIBSBaseURL.Scheme))
		default:
			roots, err := readCA(readFile, c.SIBSTLSCA)
			if err != nil {
				bad("SIBS_TLS_CA", err)
			}
			c.SIBSRoots = roots
		}
	}
	return errs
}

// trustingClient is gatewayClient for a gateway whose certificate is
// signed by roots (PAYMENTOPTIONS_TLS_CA, SIBS_TLS_CA): the same sized
// pool, under the same tracing, trusting roots and nothing else. With nil
// roots it is gatewayClient's, which trusts the system's authorities.
func trustingClient(tp trace.TracerProvider, maxConns int, roots *x509.CertPool) *http.Client {
	if roots == nil {
		return gatewayClient(tp, maxConns)
	}
	t := gateway.Transport(maxConns)
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tracing.Transport(tp, t)}
}
