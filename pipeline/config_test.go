package pipeline

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaultConfigValid(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if FormatQueues(c.Queues) != "interactive=6,default=3,finetune=1" {
		t.Errorf("default queues %s", FormatQueues(c.Queues))
	}
}

func TestConfigEnvAndFlags(t *testing.T) {
	t.Parallel()
	env := envMap(map[string]string{
		"TANDEM_REDIS_URL":        "redis://:pw@redis.example:6380/4",
		"TANDEM_QUEUES":           " a=2, b=1 ",
		"TANDEM_CONCURRENCY":      "7",
		"TANDEM_SHUTDOWN_TIMEOUT": "5s",
		"TANDEM_NATS_URL":         "nats://n1:4222,nats://n2:4222",
		"TANDEM_DATA_DIR":         "",
	})
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.bindFlags(fs, env)
	if err := fs.Parse([]string{"--concurrency=3", "--poll-interval", "250ms"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Concurrency != 3 { // flag beats env
		t.Errorf("Concurrency %d; want the flag's 3", c.Concurrency)
	}
	if c.ShutdownTimeout != 5*time.Second || c.RedisURL != "redis://:pw@redis.example:6380/4" ||
		FormatQueues(c.Queues) != "a=2,b=1" || c.NATSURL != "nats://n1:4222,nats://n2:4222" {
		t.Errorf("env not applied: %+v", c)
	}
	if c.PollInterval != 250*time.Millisecond || c.DataDir != ".tandem" || c.RetryMaxDelay != 10*time.Minute {
		t.Errorf("flag or default lost: %+v", c)
	}
}

func TestConfigEnvErrorsSurfaceInValidate(t *testing.T) {
	t.Parallel()
	var c Config
	c.bindFlags(flag.NewFlagSet("test", flag.ContinueOnError), envMap(map[string]string{
		"TANDEM_CONCURRENCY":        "many",
		"TANDEM_QUEUES":             "a=1,a=2",
		"TANDEM_REDIS_TLS_INSECURE": "perhaps",
	}))
	err := c.Validate()
	for _, want := range []string{"$TANDEM_CONCURRENCY", `"many"`, "$TANDEM_QUEUES", "listed twice", "$TANDEM_REDIS_TLS_INSECURE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v; want it to mention %s", err, want)
		}
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"scheme", func(c *Config) { c.RedisURL = "http://x" }, "RedisURL ($TANDEM_REDIS_URL, --redis-url)"},
		{"db", func(c *Config) { c.RedisURL = "redis://h/x" }, "database number"},
		{"port", func(c *Config) { c.RedisURL = "redis://h:99999" }, "port"},
		{"query", func(c *Config) { c.RedisURL = "redis://h?db=1" }, "query"},
		{"no host", func(c *Config) { c.RedisURL = "redis:///0" }, "missing host"},
		{"empty url", func(c *Config) { c.RedisURL = "" }, "RedisURL"},
		{"tls on plain", func(c *Config) { c.RedisTLSInsecure = true }, "use rediss://"},
		{"missing CA", func(c *Config) {
			c.RedisURL = "rediss://h"
			c.RedisTLSCA = filepath.Join(dir, "nope.pem")
		}, "RedisTLSCA"},
		{"cert without key", func(c *Config) { c.RedisURL = "rediss://h"; c.RedisTLSCert = "x" }, "RedisTLSKey"},
		{"nats scheme", func(c *Config) { c.NATSURL = "http://n" }, "NATSURL"},
		{"nats two auths", func(c *Config) { c.NATSUser = "u"; c.NATSCreds = "c" }, "NATSCreds"},
		{"nats password alone", func(c *Config) { c.NATSPassword = "p" }, "NATSPassword"},
		{"nats creds file", func(c *Config) { c.NATSCreds = filepath.Join(dir, "missing.creds") }, "NATSCreds"},
		{"no queues", func(c *Config) { c.Queues = nil }, "Queues"},
		{"bad queue", func(c *Config) { c.Queues = map[string]int{"a b": 1} }, "Queues"},
		{"zero weight", func(c *Config) { c.Queues = map[string]int{"a": 0} }, "weight 0"},
		{"concurrency", func(c *Config) { c.Concurrency = 0 }, "Concurrency"},
		{"shutdown", func(c *Config) { c.ShutdownTimeout = 0 }, "ShutdownTimeout"},
		{"retry base", func(c *Config) { c.RetryBaseDelay = 0 }, "RetryBaseDelay"},
		{"retry max", func(c *Config) { c.RetryMaxDelay = time.Millisecond }, "RetryMaxDelay"},
		{"poll", func(c *Config) { c.PollInterval = time.Hour }, "PollInterval"},
		{"data dir", func(c *Config) { c.DataDir = " " }, "DataDir"},
		{"data root empty", func(c *Config) { c.DataRoot = "" }, "DataRoot ($TANDEM_DATA_ROOT, --data-root): empty"},
		{"data root /", func(c *Config) { c.DataRoot = "/" }, "DataRoot ($TANDEM_DATA_ROOT, --data-root): \"/\" is the filesystem root"},
		{"data root /..", func(c *Config) { c.DataRoot = "/tmp/.." }, "is the filesystem root"},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v; want it to contain %q", tc.name, err, tc.want)
		}
	}
}

func TestRedisURLParsing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		want asynq.RedisClientOpt
		tls  bool
	}{
		{"redis://127.0.0.1:6379/0", asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}, false},
		{"redis://host", asynq.RedisClientOpt{Addr: "host:6379"}, false},
		{"redis://:secret@host:7000/3", asynq.RedisClientOpt{Addr: "host:7000", Password: "secret", DB: 3}, false},
		{"redis://alice:p%40ss@host/2", asynq.RedisClientOpt{Addr: "host:6379", Username: "alice", Password: "p@ss", DB: 2}, false},
		{"redis://[::1]:6390/", asynq.RedisClientOpt{Addr: "[::1]:6390"}, false},
		{"rediss://cache.example:6380/1", asynq.RedisClientOpt{Addr: "cache.example:6380", DB: 1}, true},
	} {
		c := DefaultConfig()
		c.RedisURL = tc.url
		opt, err := c.RedisConnOpt()
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		got := opt.(asynq.RedisClientOpt)
		if (got.TLSConfig != nil) != tc.tls {
			t.Errorf("%s: TLS %v; want %v", tc.url, got.TLSConfig != nil, tc.tls)
		}
		if got.TLSConfig != nil && got.TLSConfig.ServerName != "cache.example" {
			t.Errorf("%s: server name %q", tc.url, got.TLSConfig.ServerName)
		}
		got.TLSConfig = nil
		if got != tc.want {
			t.Errorf("%s: got %+v; want %+v", tc.url, got, tc.want)
		}
	}
	// A password must never appear in an error or a help text.
	c := DefaultConfig()
	c.RedisURL = "redis://:hunter2@host:notaport/0"
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Validate = %v; want an error without the password", err)
	}
	c.RedisURL = "redis://:hunter2@ho st/0"
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Validate = %v; want an error without the password", err)
	}
}

func TestFlagHelpHidesSecrets(t *testing.T) {
	t.Parallel()
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	c.bindFlags(fs, envMap(map[string]string{
		"TANDEM_REDIS_URL":     "redis://:hunter2@host/0",
		"TANDEM_NATS_PASSWORD": "hunter3",
		"TANDEM_NATS_USER":     "u",
	}))
	fs.PrintDefaults()
	if strings.Contains(out.String(), "hunter") {
		t.Errorf("help shows a secret:\n%s", out.String())
	}
	if c.RedisURL != "redis://:hunter2@host/0" || c.NATSPassword != "hunter3" {
		t.Error("redaction changed the values themselves")
	}
}

func TestEnvHelp(t *testing.T) {
	t.Parallel()
	h := EnvHelp()
	for _, s := range settings {
		if !strings.Contains(h, s.env) || !strings.Contains(h, "--"+s.flag) {
			t.Errorf("EnvHelp lacks %s / --%s", s.env, s.flag)
		}
	}
	for _, want := range []string{"interactive=6,default=3,finetune=1", "redis://127.0.0.1:6379/0", "30s", "number of CPUs"} {
		if !strings.Contains(h, want) {
			t.Errorf("EnvHelp lacks default %q:\n%s", want, h)
		}
	}
	// Every setting names a real field (fieldErr panics otherwise).
	for _, s := range settings {
		_ = settingFor(s.field)
	}
}

func TestParseQueues(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"a=1":            "a=1",
		"a=1,b=5,":       "b=5,a=1",
		" x = 2 , y=2 ":  "x=2,y=2",
		"a":              "want name=weight",
		"a=0":            "not a number in 1..",
		"a=x":            "not a number",
		"=1":             "empty",
		"a=1,a=2":        "listed twice",
		"":               "no queues",
		"q{x}=1":         "character",
		"a=1001":         "1..1000",
		"interactive=6,": "interactive=6",
	} {
		q, err := ParseQueues(in)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = FormatQueues(q)
		}
		if !strings.Contains(got, want) {
			t.Errorf("ParseQueues(%q) = %q; want %q", in, got, want)
		}
	}
}

// newRedisTestCA writes a self-signed CA and a client certificate and key
// signed by it, for the TLS settings.
func newRedisTestCA(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tandem test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile = write("ca.pem", "CERTIFICATE", der)
	// The CA doubles as the client certificate: enough to test loading.
	return caFile, caFile, write("key.pem", "EC PRIVATE KEY", keyDER)
}

func TestRedisTLSFiles(t *testing.T) {
	t.Parallel()
	ca, cert, key := newRedisTestCA(t)
	c := DefaultConfig()
	c.RedisURL = "rediss://user:pw@redis.internal:6380/2"
	c.RedisTLSCA, c.RedisTLSCert, c.RedisTLSKey = ca, cert, key
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	opt, err := c.RedisConnOpt()
	if err != nil {
		t.Fatal(err)
	}
	tc := opt.(asynq.RedisClientOpt).TLSConfig
	if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "redis.internal" || tc.InsecureSkipVerify {
		t.Errorf("TLS config = %+v", tc)
	}
	rdb, err := c.RedisClient()
	if err != nil {
		t.Fatal(err)
	}
	rdb.Close()

	c.RedisTLSCA = key // a PEM file with no certificate
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "RedisTLSCA") {
		t.Errorf("Validate = %v; want RedisTLSCA named", err)
	}
	c.RedisTLSCA, c.RedisTLSKey = ca, ca // key file holds no key
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "RedisTLSCert") {
		t.Errorf("Validate = %v; want RedisTLSCert named", err)
	}
}
