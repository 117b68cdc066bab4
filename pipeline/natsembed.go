package pipeline

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tandem-ai/tandem/limits"
)

// EmbeddedNATS is a real nats-server running in this process, with JetStream
// storing under one directory. Tests use it instead of a mock; `worker exec`
// and laptop setups can use it instead of a separate server.
type EmbeddedNATS struct {
	srv          *server.Server
	url          string
	shutdownOnce sync.Once
}

// Embedded server defaults.
const (
	embeddedReadyTimeout = 10 * time.Second
	// embeddedMaxStore caps JetStream's disk use; DefaultStreams reserve 768 MiB.
	embeddedMaxStore  = limits.EmbeddedNATSStoreBytes
	embeddedMaxMemory = limits.EmbeddedNATSMemoryBytes
)

type embeddedConfig struct {
	host     string
	port     int
	user     string
	password string
	nkeys    []string
	roles    NATSCredentials
	tls      *tls.Config
	maxStore int64
	logging  bool
	sync     bool
}

// EmbeddedOption configures StartEmbeddedNATS.
type EmbeddedOption func(*embeddedConfig)

// WithEmbeddedHost sets the listen address (default 127.0.0.1: loopback only).
func WithEmbeddedHost(host string) EmbeddedOption { return func(c *embeddedConfig) { c.host = host } }

// WithEmbeddedPort sets the client port (default: a free port chosen by the OS).
func WithEmbeddedPort(port int) EmbeddedOption { return func(c *embeddedConfig) { c.port = port } }

// WithEmbeddedUser requires clients to authenticate with user and password.
func WithEmbeddedUser(user, password string) EmbeddedOption {
	return func(c *embeddedConfig) { c.user, c.password = user, password }
}

// WithEmbeddedNKeyUser requires clients to authenticate with the nkey whose
// public user key (U...) is given; may be repeated.
func WithEmbeddedNKeyUser(publicKey string) EmbeddedOption {
	return func(c *embeddedConfig) { c.nkeys = append(c.nkeys, publicKey) }
}

// WithEmbeddedTLS requires TLS with cfg. When cfg.ClientAuth is
// tls.RequireAndVerifyClientCert, clients must present a certificate signed
// by cfg.ClientCAs.
func WithEmbeddedTLS(cfg *tls.Config) EmbeddedOption { return func(c *embeddedConfig) { c.tls = cfg } }

// WithEmbeddedMaxStore caps JetStream's file storage (default 1 GiB).
func WithEmbeddedMaxStore(bytes int64) EmbeddedOption {
	return func(c *embeddedConfig) { c.maxStore = bytes }
}

// WithEmbeddedSyncAlways makes JetStream fsync every write before it
// acknowledges it (nats-server's `sync_interval: always`). Default: the
// server's periodic fsync, every 2 minutes; docs/RELIABILITY.md weighs the
// two.
func WithEmbeddedSyncAlways() EmbeddedOption { return func(c *embeddedConfig) { c.sync = true } }

// WithEmbeddedLogging sends the server's log to stderr (default: silent).
func WithEmbeddedLogging() EmbeddedOption { return func(c *embeddedConfig) { c.logging = true } }

// StartEmbeddedNATS starts a nats-server with JetStream on storeDir and
// returns once it accepts connections. Restarting on the same storeDir keeps
// the streams and their messages.
func StartEmbeddedNATS(storeDir string, opts ...EmbeddedOption) (*EmbeddedNATS, error) {
	if storeDir == "" {
		return nil, errors.New("pipeline: StartEmbeddedNATS: storeDir is empty")
	}
	cfg := embeddedConfig{host: "127.0.0.1", port: server.RANDOM_PORT, maxStore: embeddedMaxStore}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.port != server.RANDOM_PORT && (cfg.port < 0 || cfg.port > 65535):
		return nil, fmt.Errorf("pipeline: StartEmbeddedNATS: port %d is out of range", cfg.port)
	case cfg.maxStore <= 0:
		return nil, fmt.Errorf("pipeline: StartEmbeddedNATS: max store %d must be > 0", cfg.maxStore)
	case (cfg.user == "") != (cfg.password == ""):
		return nil, errors.New("pipeline: StartEmbeddedNATS: user and password must be set together")
	case cfg.user != "" && len(cfg.nkeys) > 0:
		return nil, errors.New("pipeline: StartEmbeddedNATS: choose user/password or nkey users, not both")
	case cfg.roles != nil && (cfg.user != "" || len(cfg.nkeys) > 0):
		return nil, errors.New("pipeline: StartEmbeddedNATS: choose roles, user/password or nkey users, not several")
	}
	var users []*server.User
	if cfg.roles != nil {
		var err error
		if users, err = roleUsers(cfg.roles); err != nil {
			return nil, fmt.Errorf("pipeline: StartEmbeddedNATS: %w", err)
		}
	}
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, fmt.Errorf("pipeline: StartEmbeddedNATS: store dir: %w", err)
	}
	sopts := &server.Options{
		ServerName:         "tandem-embedded",
		Host:               cfg.host,
		Port:               cfg.port,
		NoLog:              !cfg.logging,
		NoSigs:             true,
		JetStream:          true,
		StoreDir:           storeDir,
		JetStreamMaxStore:  cfg.maxStore,
		JetStreamMaxMemory: embeddedMaxMemory,
		Username:           cfg.user,
		Password:           cfg.password,
		Users:              users,
		SyncAlways:         cfg.sync,
	}
	for _, pub := range cfg.nkeys {
		sopts.Nkeys = append(sopts.Nkeys, &server.NkeyUser{Nkey: pub})
	}
	if cfg.tls != nil {
		sopts.TLSConfig = cfg.tls
		sopts.TLS = true
		sopts.TLSVerify = cfg.tls.ClientAuth == tls.RequireAndVerifyClientCert
		sopts.TLSTimeout = 5 // seconds; handshakes are slow under -race
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("pipeline: StartEmbeddedNATS: %w", err)
	}
	if cfg.logging {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(embeddedReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("pipeline: StartEmbeddedNATS: not ready within %v (port %d in use? store %s locked?)",
			embeddedReadyTimeout, cfg.port, storeDir)
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("pipeline: StartEmbeddedNATS: server has no TCP address")
	}
	scheme := "nats"
	if cfg.tls != nil {
		scheme = "tls"
	}
	url := scheme + "://" + net.JoinHostPort(cfg.host, strconv.Itoa(addr.Port))
	return &EmbeddedNATS{srv: srv, url: url}, nil
}

// URL is the client URL, nats://host:port (tls:// when TLS is required).
func (e *EmbeddedNATS) URL() string { return e.url }

// Server exposes the underlying server, for tests that inspect it.
func (e *EmbeddedNATS) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it has stopped and flushed
// JetStream to disk. Safe to call more than once.
func (e *EmbeddedNATS) Shutdown() {
	e.shutdownOnce.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}
