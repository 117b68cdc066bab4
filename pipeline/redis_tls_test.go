package pipeline

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// redisPing connects with cfg's plain client and its asynq connection and
// returns the first error. Both must work for a binary to run.
func redisPing(t *testing.T, cfg Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb, err := cfg.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	opt, err := cfg.RedisConnOpt()
	if err != nil {
		return err
	}
	ins := asynq.NewInspector(opt)
	defer ins.Close()
	_, err = ins.Queues()
	return err
}

// redisClientPing uses only the plain client: failing dials through asynq's
// pool leave a background redialer behind for a moment, which goleak would
// report.
func redisClientPing(t *testing.T, cfg Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb, err := cfg.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	return rdb.Ping(ctx).Err()
}

func wantRedisErr(t *testing.T, what string, err error, substr ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: connected, want a refusal", what)
		return
	}
	for _, s := range substr {
		if strings.Contains(err.Error(), s) {
			t.Logf("%s: refused as expected: %v", what, err)
			return
		}
	}
	t.Errorf("%s: error %q names none of %q", what, err, substr)
}

func TestRedisPasswordAndACL(t *testing.T) {
	t.Parallel()
	port := startRedisServer(t, false, `save ""`, "requirepass default-secret",
		"user tandem on >tandem-secret ~* &* +@all")
	at := "@127.0.0.1:" + strconv.Itoa(port) + "/3"
	cfg := DefaultConfig()

	for _, u := range []string{"redis://:default-secret" + at, "redis://tandem:tandem-secret" + at} {
		cfg.RedisURL = u
		if err := redisPing(t, cfg); err != nil {
			t.Errorf("%s: %v", RedactURL(u), err)
		}
	}
	cfg.RedisURL = "redis://:wrong" + at
	wantRedisErr(t, "wrong password", redisClientPing(t, cfg), "WRONGPASS")
	cfg.RedisURL = "redis://tandem:wrong" + at
	wantRedisErr(t, "wrong ACL password", redisClientPing(t, cfg), "WRONGPASS")
	cfg.RedisURL = "redis://nobody:tandem-secret" + at
	wantRedisErr(t, "unknown ACL user", redisClientPing(t, cfg), "WRONGPASS")
	cfg.RedisURL = "redis://127.0.0.1:" + strconv.Itoa(port) + "/3"
	wantRedisErr(t, "no password", redisClientPing(t, cfg), "NOAUTH")
}

// writeServerPEM writes the test PKI's server certificate and key for
// redis-server, which reads files.
func writeServerPEM(t *testing.T, p testPKI) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	kder, err := x509.MarshalECPrivateKey(p.Server.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "server.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Server.Certificate[0]})),
		writeFile(t, dir, "server-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

func TestRedisMutualTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srvCert, srvKey := writeServerPEM(t, pki)
	port := startRedisServer(t, true, `save ""`, "requirepass tls-secret",
		"tls-cert-file "+srvCert, "tls-key-file "+srvKey, "tls-ca-cert-file "+pki.CAFile,
		"tls-auth-clients yes")
	hostPort := "127.0.0.1:" + strconv.Itoa(port)

	good := DefaultConfig()
	good.RedisURL = "rediss://:tls-secret@" + hostPort + "/0"
	good.RedisTLSCA, good.RedisTLSCert, good.RedisTLSKey = pki.CAFile, pki.ClientCert, pki.ClientKey
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := redisPing(t, good); err != nil {
		t.Fatalf("rediss:// with CA and client certificate: %v", err)
	}

	noCA := good
	noCA.RedisTLSCA = ""
	wantRedisErr(t, "no CA (system roots)", redisClientPing(t, noCA), "certificate signed by unknown authority")

	otherCA := good
	otherCA.RedisTLSCA = newTestPKI(t).CAFile
	wantRedisErr(t, "another CA", redisClientPing(t, otherCA), "certificate signed by unknown authority")

	noClientCert := good
	noClientCert.RedisTLSCert, noClientCert.RedisTLSKey = "", ""
	wantRedisErr(t, "no client certificate", redisClientPing(t, noClientCert),
		"certificate required", "bad certificate", "handshake failure", "connection reset", "EOF")

	wrongPass := good
	wrongPass.RedisURL = "rediss://:wrong@" + hostPort + "/0"
	wantRedisErr(t, "wrong password over TLS", redisClientPing(t, wrongPass), "WRONGPASS")

	plain := DefaultConfig()
	plain.RedisURL = "redis://:tls-secret@" + hostPort + "/0"
	wantRedisErr(t, "plain redis:// to a TLS port", redisClientPing(t, plain),
		"EOF", "connection reset", "i/o timeout", "protocol")

	// The server certificate is for 127.0.0.1; "localhost" does not match.
	wrongName := good
	wrongName.RedisURL = "rediss://:tls-secret@localhost:" + strconv.Itoa(port) + "/0"
	wantRedisErr(t, "host name not in the certificate", redisClientPing(t, wrongName), "certificate is valid for", "doesn't contain", "not valid for")

	// TLS files with redis:// are refused before any dial.
	mixed := good
	mixed.RedisURL = "redis://:tls-secret@" + hostPort + "/0"
	if err := mixed.Validate(); err == nil || !strings.Contains(err.Error(), "use rediss://") {
		t.Errorf("TLS files with redis://: Validate = %v", err)
	}
	// A CA file that holds no certificate is refused by Validate, naming it.
	bad := good
	bad.RedisTLSCA = writeFile(t, t.TempDir(), "empty.pem", []byte("not pem"))
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "RedisTLSCA") {
		t.Errorf("empty CA file: Validate = %v", err)
	}
}

// TestRedisServerTLSOnly: a server that verifies no client certificate
// accepts rediss:// with only the CA.
func TestRedisServerTLSOnly(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srvCert, srvKey := writeServerPEM(t, pki)
	port := startRedisServer(t, true, `save ""`, "tls-cert-file "+srvCert, "tls-key-file "+srvKey,
		"tls-ca-cert-file "+pki.CAFile, "tls-auth-clients no")
	cfg := DefaultConfig()
	cfg.RedisURL = "rediss://127.0.0.1:" + strconv.Itoa(port) + "/1"
	cfg.RedisTLSCA = pki.CAFile
	if err := redisPing(t, cfg); err != nil {
		t.Fatalf("rediss:// with CA only: %v", err)
	}
}
