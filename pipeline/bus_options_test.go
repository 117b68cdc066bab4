package pipeline

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files.
type testPKI struct {
	CAFile, ClientCert, ClientKey string
	CAPool                        *x509.CertPool
	Server                        tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tandem test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, []byte) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	srvCert, srvKey := leaf(2, "nats", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := leaf(3, "worker", x509.ExtKeyUsageClientAuth)
	server, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return testPKI{
		CAFile:     writeFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		ClientCert: writeFile(t, dir, "client.pem", cliCert),
		ClientKey:  writeFile(t, dir, "client-key.pem", cliKey),
		CAPool:     pool,
		Server:     server,
	}
}

// ServerTLS requires client certificates signed by the test CA.
func (p testPKI) ServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.Server},
		ClientCAs:    p.CAPool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

func newUserNKeyFile(t *testing.T, dir string) (seedFile, publicKey string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "user.nk", seed), pub
}

func newCredsFile(t *testing.T, dir string) string {
	t.Helper()
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	token, err := jwt.NewUserClaims(pub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "user.creds", creds)
}

func TestNATSOptionsParsing(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t)
	seedFile, _ := newUserNKeyFile(t, dir)
	creds := newCredsFile(t, dir)
	garbage := writeFile(t, dir, "garbage", []byte("not a key\n"))
	otherKey := newTestPKI(t).ClientKey // a valid key that does not match pki.ClientCert
	missing := filepath.Join(dir, "missing")

	ok := []struct {
		name  string
		cfg   Config
		nopts int
	}{
		{"nothing set", Config{}, 0},
		{"creds", Config{NATSCreds: creds}, 1},
		{"user and password", Config{NATSUser: "u", NATSPassword: "p"}, 1},
		{"nkey seed", Config{NATSNKeyFile: seedFile}, 1},
		{"root CA only", Config{NATSTLSCA: pki.CAFile}, 1},
		{"mutual TLS with nkey", Config{NATSNKeyFile: seedFile, NATSTLSCA: pki.CAFile, NATSTLSCert: pki.ClientCert, NATSTLSKey: pki.ClientKey}, 2},
	}
	for _, c := range ok {
		opts, err := c.cfg.NATSOptions()
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		} else if len(opts) != c.nopts {
			t.Errorf("%s: %d options, want %d", c.name, len(opts), c.nopts)
		}
	}

	bad := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"password without user", Config{NATSPassword: "p"}, "NATSUser"},
		{"user without password", Config{NATSUser: "u"}, "NATSPassword"},
		{"missing creds", Config{NATSCreds: missing}, "NATSCreds"},
		{"garbage creds", Config{NATSCreds: garbage}, "NATSCreds"},
		{"missing nkey", Config{NATSNKeyFile: missing}, "NATSNKeyFile"},
		{"garbage nkey", Config{NATSNKeyFile: garbage}, "NATSNKeyFile"},
		{"two auth methods", Config{NATSCreds: creds, NATSNKeyFile: seedFile}, "only one"},
		{"missing CA", Config{NATSTLSCA: missing}, "NATSTLSCA"},
		{"CA not PEM", Config{NATSTLSCA: garbage}, "NATSTLSCA"},
		{"cert without key", Config{NATSTLSCert: pki.ClientCert}, "NATSTLSKey"},
		{"key without cert", Config{NATSTLSKey: pki.ClientKey}, "NATSTLSCert"},
		{"missing cert", Config{NATSTLSCert: missing, NATSTLSKey: pki.ClientKey}, "NATSTLSCert"},
		{"missing key", Config{NATSTLSCert: pki.ClientCert, NATSTLSKey: missing}, "NATSTLSKey"},
		{"mismatched key", Config{NATSTLSCert: pki.ClientCert, NATSTLSKey: otherKey}, "NATSTLSCert"},
	}
	for _, c := range bad {
		_, err := c.cfg.NATSOptions()
		if err == nil {
			t.Errorf("%s: no error", c.name)
		} else if !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: error %q does not name %s", c.name, err, c.field)
		}
	}
}

// The options work against a real server that requires them, and the
// server refuses a client without them.
func TestNATSOptionsConnectNKey(t *testing.T) {
	dir := t.TempDir()
	seedFile, pub := newUserNKeyFile(t, dir)
	otherSeed, _ := newUserNKeyFile(t, t.TempDir())
	srv := startTestNATS(t, WithEmbeddedNKeyUser(pub))
	ctx := testContext(t)

	opts, err := Config{NATSNKeyFile: seedFile}.NATSOptions()
	if err != nil {
		t.Fatalf("NATSOptions: %v", err)
	}
	b := connectTestBus(t, srv.URL(), opts...)
	if err := b.Publish(ctx, FeedbackSubject("rating"), "n1", 1); err != nil {
		t.Fatalf("Publish over nkey auth: %v", err)
	}

	if b, err := ConnectBus(ctx, srv.URL()); err == nil {
		b.Close()
		t.Fatal("connected without credentials")
	}
	wrong, err := Config{NATSNKeyFile: otherSeed}.NATSOptions()
	if err != nil {
		t.Fatalf("NATSOptions: %v", err)
	}
	if b, err := ConnectBus(ctx, srv.URL(), wrong...); err == nil {
		b.Close()
		t.Fatal("connected with an unknown nkey")
	}
}

func TestNATSOptionsConnectUserPassword(t *testing.T) {
	srv := startTestNATS(t, WithEmbeddedUser("tandem", "pw-1"))
	ctx := testContext(t)
	opts, err := Config{NATSUser: "tandem", NATSPassword: "pw-1"}.NATSOptions()
	if err != nil {
		t.Fatalf("NATSOptions: %v", err)
	}
	connectTestBus(t, srv.URL(), opts...)
	wrong, _ := Config{NATSUser: "tandem", NATSPassword: "pw-2"}.NATSOptions()
	if b, err := ConnectBus(ctx, srv.URL(), wrong...); err == nil {
		b.Close()
		t.Fatal("connected with a wrong password")
	}
}

func TestNATSOptionsConnectMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	srv := startTestNATS(t, WithEmbeddedTLS(pki.ServerTLS()))
	ctx := testContext(t)
	if !strings.HasPrefix(srv.URL(), "tls://") {
		t.Fatalf("URL %s: want tls://", srv.URL())
	}

	opts, err := Config{NATSTLSCA: pki.CAFile, NATSTLSCert: pki.ClientCert, NATSTLSKey: pki.ClientKey}.NATSOptions()
	if err != nil {
		t.Fatalf("NATSOptions: %v", err)
	}
	b := connectTestBus(t, srv.URL(), opts...)
	if err := b.Publish(ctx, EventSubject("tls.ok"), "t1", 1); err != nil {
		t.Fatalf("Publish over mutual TLS: %v", err)
	}

	// Trusting the CA is not enough: the server wants a client certificate.
	caOnly, err := Config{NATSTLSCA: pki.CAFile}.NATSOptions()
	if err != nil {
		t.Fatalf("NATSOptions: %v", err)
	}
	if b, err := ConnectBus(ctx, srv.URL(), caOnly...); err == nil {
		b.Close()
		t.Fatal("connected without a client certificate")
	}
	// And a client that does not trust the server's CA refuses the server.
	if b, err := ConnectBus(ctx, srv.URL()); err == nil {
		b.Close()
		t.Fatal("connected without trusting the server's CA")
	}
}
