package pipeline

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// NATSOptions turns the NATS fields of Config into connection options for
// ConnectBus. Files are read now, so a wrong path or a malformed key fails at
// start-up with the field's name rather than at the first reconnect.
//
// Authentication: at most one of NATSCreds (a .creds file: user JWT + seed),
// NATSUser with NATSPassword or NATSPasswordFile, or NATSNKeyFile (a user nkey seed). TLS:
// NATSTLSCA adds a root CA for the server's certificate; NATSTLSCert with
// NATSTLSKey present a client certificate (mutual TLS).
func (c Config) NATSOptions() ([]nats.Option, error) {
	var opts []nats.Option
	var methods []string

	if c.NATSCreds != "" {
		methods = append(methods, "NATSCreds")
		if err := checkCredsFile(c.NATSCreds); err != nil {
			return nil, fmt.Errorf("pipeline: NATSCreds %s: %w", c.NATSCreds, err)
		}
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	password := c.NATSPassword
	if c.NATSPasswordFile != "" {
		if password != "" {
			return nil, errors.New("pipeline: NATSPasswordFile and NATSPassword are both set; give one")
		}
		p, err := ReadNATSPasswordFile(c.NATSPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("pipeline: NATSPasswordFile: %w", err)
		}
		password = p
	}
	switch {
	case c.NATSUser != "" && password != "":
		methods = append(methods, "NATSUser/NATSPassword")
		if _, isRole := NATSRolePermissions(c.NATSUser); isRole {
			// A role may subscribe only to its own inbox prefix.
			opts = append(opts, NATSRoleOptions(c.NATSUser, password)...)
		} else {
			opts = append(opts, nats.UserInfo(c.NATSUser, password))
		}
	case c.NATSUser != "":
		return nil, errors.New("pipeline: NATSUser is set but NATSPassword (or NATSPasswordFile) is empty")
	case password != "":
		return nil, errors.New("pipeline: NATSPassword is set but NATSUser is empty")
	}
	if c.NATSNKeyFile != "" {
		methods = append(methods, "NATSNKeyFile")
		opt, err := nats.NkeyOptionFromSeed(c.NATSNKeyFile)
		if err != nil {
			return nil, fmt.Errorf("pipeline: NATSNKeyFile %s: %w", c.NATSNKeyFile, err)
		}
		opts = append(opts, opt)
	}
	if len(methods) > 1 {
		return nil, fmt.Errorf("pipeline: NATS authentication: set only one of %v", methods)
	}

	tlsCfg, err := c.natsTLSConfig()
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		opts = append(opts, nats.Secure(tlsCfg))
	}
	return opts, nil
}

// checkCredsFile parses a .creds file the way the client will at connect
// time, without keeping the secret.
func checkCredsFile(path string) error {
	contents, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer clear(contents)
	if _, err := nkeys.ParseDecoratedJWT(contents); err != nil {
		return fmt.Errorf("user JWT: %w", err)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(contents)
	if err != nil {
		return fmt.Errorf("user seed: %w", err)
	}
	kp.Wipe()
	return nil
}

// natsTLSConfig builds the client TLS configuration, or nil when no TLS
// field is set (a tls:// URL still gets TLS with the system roots).
func (c Config) natsTLSConfig() (*tls.Config, error) {
	if c.NATSTLSCA == "" && c.NATSTLSCert == "" && c.NATSTLSKey == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.NATSTLSCA != "" {
		pem, err := os.ReadFile(c.NATSTLSCA)
		if err != nil {
			return nil, fmt.Errorf("pipeline: NATSTLSCA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pipeline: NATSTLSCA %s: no PEM certificate found", c.NATSTLSCA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.NATSTLSCert != "" && c.NATSTLSKey == "":
		return nil, errors.New("pipeline: NATSTLSCert is set but NATSTLSKey is empty")
	case c.NATSTLSKey != "" && c.NATSTLSCert == "":
		return nil, errors.New("pipeline: NATSTLSKey is set but NATSTLSCert is empty")
	case c.NATSTLSCert != "":
		certPEM, err := os.ReadFile(c.NATSTLSCert)
		if err != nil {
			return nil, fmt.Errorf("pipeline: NATSTLSCert: %w", err)
		}
		keyPEM, err := os.ReadFile(c.NATSTLSKey)
		if err != nil {
			return nil, fmt.Errorf("pipeline: NATSTLSKey: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("pipeline: NATSTLSCert %s / NATSTLSKey %s: %w", c.NATSTLSCert, c.NATSTLSKey, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
