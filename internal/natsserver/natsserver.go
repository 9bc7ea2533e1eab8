// Package natsserver runs a NATS server with JetStream inside the process: the
// worker's zero-configuration mode and the tests use it.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options says where the server listens and keeps its data.
type Options struct {
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// StoreDir holds the JetStream file store.
	StoreDir string
	// ServerName names the server in logs and advisories.
	ServerName string
}

// ErrPortInUse is returned when the port is taken by another process.
var ErrPortInUse = errors.New("port already in use")

// Start runs a server and waits until it accepts connections. The caller
// stops it with Shutdown and WaitForShutdown.
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port > 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", o.Host, o.Port, ErrPortInUse)
		}
		l.Close()
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		// JetStream's own limits are sized for the machine; keep the defaults.
		MaxPayload: 1 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats server: not ready after 10s")
	}
	return ns, nil
}
