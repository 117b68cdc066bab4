package pipeline

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/limits"
)

// MaxRedisDB bounds the database number in a Redis URL. Redis itself defaults
// to 16 databases; the bound only catches typos such as a port in the path.
const MaxRedisDB = limits.RedisDB

// redisTarget is a parsed Redis URL: everything needed to dial except TLS
// files, which come from separate settings.
type redisTarget struct {
	addr     string // host:port
	host     string // for TLS server-name checks
	username string
	password string
	db       int
	tls      bool // rediss://
}

// parseRedisURL parses redis://[user[:password]@]host[:port][/db] and the
// rediss:// (TLS) form. Errors never echo the URL, because it may carry a
// password.
func parseRedisURL(raw string) (redisTarget, error) {
	var t redisTarget
	if raw == "" {
		return t, errors.New("empty; want redis://host:port/db or rediss://...")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			return t, fmt.Errorf("not a URL: %v", uerr.Err)
		}
		return t, errors.New("not a URL")
	}
	switch u.Scheme {
	case "redis":
	case "rediss":
		t.tls = true
	default:
		return t, fmt.Errorf("scheme %q not supported; want redis:// or rediss://", u.Scheme)
	}
	if u.Opaque != "" {
		return t, errors.New("missing // after the scheme")
	}
	if len(u.RawQuery) > 0 || u.Fragment != "" {
		return t, errors.New("query and fragment are not supported; put the database number in the path (/0)")
	}
	t.host = u.Hostname()
	if t.host == "" {
		return t, errors.New("missing host")
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return t, fmt.Errorf("port %q is not a number in 1..65535", port)
	}
	t.addr = net.JoinHostPort(t.host, port)
	if u.User != nil {
		t.username = u.User.Username()
		t.password, _ = u.User.Password()
	}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n >= MaxRedisDB {
			return t, fmt.Errorf("path %q is not a database number in 0..%d", u.Path, MaxRedisDB-1)
		}
		t.db = n
	}
	return t, nil
}

// RedactURL returns raw with any password replaced by "xxxxx", for logs and
// --help output. A string that does not parse is replaced entirely, since we
// cannot tell where a password would be in it.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// redisTLSConfig builds the TLS settings for a rediss:// URL from the CA,
// client certificate and key files. Errors name the setting at fault.
func (c Config) redisTLSConfig(serverName string) (*tls.Config, error) {
	tc := &tls.Config{
		ServerName:         serverName,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.RedisTLSInsecure, //nolint:gosec // opt-in, documented as for testing only
	}
	if c.RedisTLSCA != "" {
		pem, err := os.ReadFile(c.RedisTLSCA)
		if err != nil {
			return nil, c.fieldErr("RedisTLSCA", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, c.fieldErr("RedisTLSCA", fmt.Errorf("no PEM certificate in %s", c.RedisTLSCA))
		}
		tc.RootCAs = pool
	}
	if (c.RedisTLSCert == "") != (c.RedisTLSKey == "") {
		field := "RedisTLSCert"
		if c.RedisTLSCert != "" {
			field = "RedisTLSKey"
		}
		return nil, c.fieldErr(field, errors.New("client certificate and key must be given together"))
	}
	if c.RedisTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.RedisTLSCert, c.RedisTLSKey)
		if err != nil {
			return nil, c.fieldErr("RedisTLSCert", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// redisOptions turns the Redis settings into go-redis options. Both the asynq
// connection and the plain client are built from it, so they can never point
// at different servers or databases.
func (c Config) redisOptions() (*redis.Options, error) {
	t, err := parseRedisURL(c.RedisURL)
	if err != nil {
		return nil, c.fieldErr("RedisURL", err)
	}
	tlsSet := c.RedisTLSCA != "" || c.RedisTLSCert != "" || c.RedisTLSKey != "" || c.RedisTLSInsecure
	if tlsSet && !t.tls {
		return nil, c.fieldErr("RedisURL", errors.New("TLS files or RedisTLSInsecure are set, but the scheme is redis://; use rediss://"))
	}
	opts := &redis.Options{
		Addr:     t.addr,
		Username: t.username,
		Password: t.password,
		DB:       t.db,
	}
	if t.tls {
		if opts.TLSConfig, err = c.redisTLSConfig(t.host); err != nil {
			return nil, err
		}
	}
	return opts, nil
}

// RedisConnOpt returns the asynq connection settings for c.RedisURL and the
// TLS files.
func (c Config) RedisConnOpt() (asynq.RedisConnOpt, error) {
	o, err := c.redisOptions()
	if err != nil {
		return nil, err
	}
	return asynq.RedisClientOpt{
		Addr:      o.Addr,
		Username:  o.Username,
		Password:  o.Password,
		DB:        o.DB,
		TLSConfig: o.TLSConfig,
	}, nil
}

// RedisClient returns a go-redis client with the same settings as
// RedisConnOpt, for Tandem's own keys (batch records, the interaction store).
// The caller closes it.
func (c Config) RedisClient() (redis.UniversalClient, error) {
	o, err := c.redisOptions()
	if err != nil {
		return nil, err
	}
	return redis.NewClient(o), nil
}
