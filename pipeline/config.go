package pipeline

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandem-ai/tandem/limits"
)

// Config holds the settings every Tandem binary shares: where Redis and NATS
// are, which queues to serve, and how hard. Each field is a flag and a
// TANDEM_* environment variable; the defaults are DefaultConfig's, and
// Validate checks them before anything connects.
type Config struct {
	// RedisURL is the Redis that holds the job queues:
	// redis://[user[:password]@]host[:port][/db], or rediss:// for TLS.
	// Default "redis://127.0.0.1:6379/0".
	RedisURL string
	// RedisTLSCA is a PEM file of CAs that sign the server's certificate.
	// Default: the system roots. rediss:// only.
	RedisTLSCA string
	// RedisTLSCert and RedisTLSKey are a PEM client certificate and key, for
	// servers that require mutual TLS. Both or neither. rediss:// only.
	RedisTLSCert, RedisTLSKey string
	// RedisTLSInsecure skips verification of the server's certificate. For
	// tests against self-signed servers only. Default false.
	RedisTLSInsecure bool

	// NATSURL is the NATS server (or a comma-separated list of cluster
	// URLs). Default "": the binary runs an embedded in-process server.
	NATSURL string
	// NATSCreds is a credentials file (JWT + NKey seed). At most one of
	// NATSCreds, NATSUser and NATSNKeyFile.
	NATSCreds string
	// NATSUser and NATSPassword authenticate by user name. Against the
	// scheduler's embedded server the user is the process's role
	// (producer, worker, scheduler, observer; see NATSRolePermissions).
	NATSUser, NATSPassword string
	// NATSPasswordFile holds NATSUser's password instead of NATSPassword:
	// the file's content, one trailing newline dropped. The embedded
	// server writes one per role (NATSCredentialsDir).
	NATSPasswordFile string
	// NATSNKeyFile is an NKey seed file.
	NATSNKeyFile string
	// NATSTLSCA, NATSTLSCert and NATSTLSKey are PEM files for TLS to NATS.
	NATSTLSCA, NATSTLSCert, NATSTLSKey string

	// Queues maps queue names to weights: with every queue busy, a queue of
	// weight 6 is served six times as often as one of weight 1. Default
	// interactive=6, default=3, finetune=1.
	Queues map[string]int
	// Concurrency is the number of jobs a worker runs at once. Default
	// runtime.NumCPU().
	Concurrency int
	// ShutdownTimeout is how long a stopping worker waits for running jobs
	// before it hands them back to the queue as pending. Default 30s.
	ShutdownTimeout time.Duration
	// RetryBaseDelay and RetryMaxDelay shape the backoff of transient
	// failures: the n-th retry waits about RetryBaseDelay*2^n, at most
	// RetryMaxDelay. Defaults 2s and 10m.
	RetryBaseDelay, RetryMaxDelay time.Duration
	// PollInterval is how often an idle worker looks at empty queues, and how
	// often scheduled and retrying jobs are moved to pending. Default 1s.
	// Each poll is one Redis script call per queue, so a short interval
	// buys pick-up latency with idle Redis load (docs/PERFORMANCE.md).
	PollInterval time.Duration
	// DelayedPollInterval, when non-zero, is how often scheduled and
	// retrying jobs are moved to pending, apart from PollInterval. It is no
	// flag: SplitQueue sets it so that a lane polled every few milliseconds
	// for pick-up does not also run the promotion scripts that often.
	DelayedPollInterval time.Duration

	// DataDir holds local state: artifacts, the private Redis of
	// EnsureRedis, the embedded NATS store. Default ".tandem".
	DataDir string
	// DataRoot is the directory every file a job reads or writes on a
	// user's behalf must lie in: job inputs and outputs, datasets, run and
	// model directories (package dataroot). Job paths are relative to it;
	// absolute paths are accepted inside it; anything that resolves outside
	// is refused. It is not DataDir, which holds the service's own state
	// (private Redis, NATS store, registry): users never name files there.
	// DataDir may lie inside it, as it does by default, and job paths are
	// refused there too (jobs.ReservedDirs); DataRoot inside DataDir is
	// refused where the root is opened (worker, producer serve).
	// Default "." (the directory the process runs in); set it to the
	// shared volume in a deployment (k8s: /srv/tandem). The filesystem root
	// is refused, since it would confine nothing.
	DataRoot string

	// envErr keeps environment parse errors from BindFlags (which cannot
	// return one) until Validate.
	envErr error
}

// Limits Validate enforces. They catch typos (a concurrency of 10000 meant
// as 100) rather than describe hard limits of asynq.
const (
	MaxQueues          = limits.Queues
	MaxQueueWeight     = limits.QueueWeight
	MaxConcurrency     = limits.Concurrency
	MaxShutdownTimeout = limits.ShutdownTimeout
	MaxRetryDelay      = limits.RetryDelay
	// MinPollInterval allows the interactive lane's millisecond polls
	// (SplitQueue); bulk queues keep the 1s default.
	MinPollInterval = limits.MinPollInterval
	MaxPollInterval = limits.PollInterval
)

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		RedisURL: "redis://127.0.0.1:6379/0",
		Queues: map[string]int{
			QueueInteractive: 6,
			QueueDefault:     3,
			QueueFinetune:    1,
		},
		Concurrency:     runtime.NumCPU(),
		ShutdownTimeout: 30 * time.Second,
		RetryBaseDelay:  2 * time.Second,
		RetryMaxDelay:   10 * time.Minute,
		PollInterval:    time.Second,
		DataDir:         ".tandem",
		DataRoot:        ".",
	}
}

// setting ties a Config field to its flag and environment variable. One table
// drives BindFlags, ApplyEnv, EnvHelp and Validate's error messages, so the
// four can never disagree.
type setting struct {
	field, env, flag, usage string
	value                   func(c *Config) flag.Value
}

var settings = []setting{
	{"RedisURL", "TANDEM_REDIS_URL", "redis-url", "Redis for the job queues: redis:// or rediss:// (TLS), [user[:password]@]host[:port][/db]",
		func(c *Config) flag.Value { return &stringValue{p: &c.RedisURL, redact: RedactURL} }},
	{"RedisTLSCA", "TANDEM_REDIS_TLS_CA", "redis-tls-ca", "PEM file of CAs for rediss:// (default: system roots)",
		func(c *Config) flag.Value { return &stringValue{p: &c.RedisTLSCA} }},
	{"RedisTLSCert", "TANDEM_REDIS_TLS_CERT", "redis-tls-cert", "PEM client certificate for rediss:// (with --redis-tls-key)",
		func(c *Config) flag.Value { return &stringValue{p: &c.RedisTLSCert} }},
	{"RedisTLSKey", "TANDEM_REDIS_TLS_KEY", "redis-tls-key", "PEM client key for rediss://",
		func(c *Config) flag.Value { return &stringValue{p: &c.RedisTLSKey} }},
	{"RedisTLSInsecure", "TANDEM_REDIS_TLS_INSECURE", "redis-tls-insecure", "skip verification of Redis's certificate (tests only)",
		func(c *Config) flag.Value { return &boolValue{p: &c.RedisTLSInsecure} }},
	{"NATSURL", "TANDEM_NATS_URL", "nats-url", `NATS server URL(s), comma-separated; "" runs an embedded server`,
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSURL, redact: redactURLList} }},
	{"NATSCreds", "TANDEM_NATS_CREDS", "nats-creds", "NATS credentials file",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSCreds} }},
	{"NATSUser", "TANDEM_NATS_USER", "nats-user", "NATS user name",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSUser} }},
	{"NATSPassword", "TANDEM_NATS_PASSWORD", "nats-password", "NATS password (prefer the environment variable to the flag)",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSPassword, redact: redactSecret} }},
	{"NATSPasswordFile", "TANDEM_NATS_PASSWORD_FILE", "nats-password-file", "file holding the NATS password (the embedded server writes one per role under <data dir>/nats-credentials)",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSPasswordFile} }},
	{"NATSNKeyFile", "TANDEM_NATS_NKEY_FILE", "nats-nkey-file", "NATS NKey seed file",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSNKeyFile} }},
	{"NATSTLSCA", "TANDEM_NATS_TLS_CA", "nats-tls-ca", "PEM file of CAs for NATS TLS",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSTLSCA} }},
	{"NATSTLSCert", "TANDEM_NATS_TLS_CERT", "nats-tls-cert", "PEM client certificate for NATS (with --nats-tls-key)",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSTLSCert} }},
	{"NATSTLSKey", "TANDEM_NATS_TLS_KEY", "nats-tls-key", "PEM client key for NATS",
		func(c *Config) flag.Value { return &stringValue{p: &c.NATSTLSKey} }},
	{"Queues", "TANDEM_QUEUES", "queues", "queues and weights, name=weight,...",
		func(c *Config) flag.Value { return &queuesValue{p: &c.Queues} }},
	{"Concurrency", "TANDEM_CONCURRENCY", "concurrency", "jobs a worker runs at once",
		func(c *Config) flag.Value { return &intValue{p: &c.Concurrency} }},
	{"ShutdownTimeout", "TANDEM_SHUTDOWN_TIMEOUT", "shutdown-timeout", "wait for running jobs on stop before handing them back",
		func(c *Config) flag.Value { return &durationValue{p: &c.ShutdownTimeout} }},
	{"RetryBaseDelay", "TANDEM_RETRY_BASE_DELAY", "retry-base-delay", "first retry delay of a transient failure; doubles per retry",
		func(c *Config) flag.Value { return &durationValue{p: &c.RetryBaseDelay} }},
	{"RetryMaxDelay", "TANDEM_RETRY_MAX_DELAY", "retry-max-delay", "cap on the retry delay",
		func(c *Config) flag.Value { return &durationValue{p: &c.RetryMaxDelay} }},
	{"PollInterval", "TANDEM_POLL_INTERVAL", "poll-interval", "idle queue poll and scheduled/retry promotion interval",
		func(c *Config) flag.Value { return &durationValue{p: &c.PollInterval} }},
	{"DataDir", "TANDEM_DATA_DIR", "data-dir", "local state: artifacts, private Redis, embedded NATS store",
		func(c *Config) flag.Value { return &stringValue{p: &c.DataDir} }},
	{"DataRoot", "TANDEM_DATA_ROOT", "data-root", "directory job file paths are confined to (inputs, outputs, datasets, model dirs); paths are relative to it",
		func(c *Config) flag.Value { return &stringValue{p: &c.DataRoot} }},
}

func settingFor(field string) setting {
	for _, s := range settings {
		if s.field == field {
			return s
		}
	}
	panic("pipeline: no setting for Config." + field) // programmer error, caught by tests
}

// fieldErr names a field with its environment variable and flag, so an
// operator finds the setting whichever way they gave it.
func (c Config) fieldErr(field string, err error) error {
	s := settingFor(field)
	return fmt.Errorf("%s ($%s, --%s): %w", s.field, s.env, s.flag, err)
}

// ApplyEnv sets every field whose TANDEM_* variable lookup finds non-empty.
// Errors name the variable; fields that parsed are still set.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	var errs []error
	for _, s := range settings {
		v, ok := lookup(s.env)
		if !ok || v == "" {
			continue
		}
		if err := s.value(c).Set(v); err != nil {
			errs = append(errs, fmt.Errorf("$%s: %w", s.env, err))
		}
	}
	return errors.Join(errs...)
}

// BindFlags resets c to DefaultConfig, applies the TANDEM_* environment, and
// registers one flag per field on fs with those values as defaults: a flag
// beats its variable, which beats the default. Environment errors surface
// from Validate.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	c.bindFlags(fs, os.LookupEnv)
}

func (c *Config) bindFlags(fs *flag.FlagSet, lookup func(string) (string, bool)) {
	*c = DefaultConfig()
	c.envErr = c.ApplyEnv(lookup)
	for _, s := range settings {
		fs.Var(s.value(c), s.flag, s.usage+" ($"+s.env+")")
	}
}

// EnvHelp returns a table of the environment variables, their flags and
// defaults, for README and --help.
func EnvHelp() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VARIABLE\tFLAG\tDEFAULT\tMEANING")
	d := DefaultConfig()
	for _, s := range settings {
		def := s.value(&d).String()
		if s.field == "Concurrency" {
			def = "number of CPUs"
		}
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "%s\t--%s\t%s\t%s\n", s.env, s.flag, def, s.usage)
	}
	w.Flush()
	return b.String()
}

// Validate checks every field and returns all problems at once, each naming
// its field, variable and flag. It also loads the Redis TLS files, so a bad
// certificate fails at start rather than at the first connection.
func (c *Config) Validate() error {
	var errs []error
	add := func(field string, err error) { errs = append(errs, c.fieldErr(field, err)) }
	if c.envErr != nil {
		errs = append(errs, c.envErr)
	}

	if _, err := c.redisOptions(); err != nil {
		errs = append(errs, err) // already names its field
	}

	if err := validateNATSURLs(c.NATSURL); err != nil {
		add("NATSURL", err)
	}
	auth := 0
	for _, v := range []string{c.NATSCreds, c.NATSUser, c.NATSNKeyFile} {
		if v != "" {
			auth++
		}
	}
	if auth > 1 {
		add("NATSCreds", errors.New("set only one of NATSCreds, NATSUser and NATSNKeyFile"))
	}
	if c.NATSPassword != "" && c.NATSUser == "" {
		add("NATSPassword", errors.New("set without NATSUser"))
	}
	if c.NATSPasswordFile != "" && c.NATSUser == "" {
		add("NATSPasswordFile", errors.New("set without NATSUser"))
	}
	if c.NATSPasswordFile != "" && c.NATSPassword != "" {
		add("NATSPasswordFile", errors.New("set together with NATSPassword; give one"))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		add("NATSTLSCert", errors.New("client certificate and key must be given together"))
	}
	for _, f := range []struct{ field, path string }{
		{"NATSCreds", c.NATSCreds}, {"NATSNKeyFile", c.NATSNKeyFile}, {"NATSPasswordFile", c.NATSPasswordFile},
		{"NATSTLSCA", c.NATSTLSCA}, {"NATSTLSCert", c.NATSTLSCert}, {"NATSTLSKey", c.NATSTLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			add(f.field, err)
		}
	}

	if err := validateQueues(c.Queues); err != nil {
		add("Queues", err)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		add("Concurrency", fmt.Errorf("%d is outside 1..%d", c.Concurrency, MaxConcurrency))
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownTimeout > MaxShutdownTimeout {
		add("ShutdownTimeout", fmt.Errorf("%v is outside (0, %v]", c.ShutdownTimeout, MaxShutdownTimeout))
	}
	if c.RetryBaseDelay <= 0 || c.RetryBaseDelay > MaxRetryDelay {
		add("RetryBaseDelay", fmt.Errorf("%v is outside (0, %v]", c.RetryBaseDelay, MaxRetryDelay))
	}
	if c.RetryMaxDelay < c.RetryBaseDelay || c.RetryMaxDelay > MaxRetryDelay {
		add("RetryMaxDelay", fmt.Errorf("%v is outside [RetryBaseDelay=%v, %v]", c.RetryMaxDelay, c.RetryBaseDelay, MaxRetryDelay))
	}
	if c.PollInterval < MinPollInterval || c.PollInterval > MaxPollInterval {
		add("PollInterval", fmt.Errorf("%v is outside [%v, %v]", c.PollInterval, MinPollInterval, MaxPollInterval))
	}
	if d := c.DelayedPollInterval; d != 0 && (d < MinPollInterval || d > MaxPollInterval) {
		errs = append(errs, fmt.Errorf("DelayedPollInterval: %v is outside [%v, %v] (or 0: PollInterval)", d, MinPollInterval, MaxPollInterval))
	}
	if strings.TrimSpace(c.DataDir) == "" {
		add("DataDir", errors.New("empty"))
	}
	if err := validateDataRoot(c.DataRoot); err != nil {
		add("DataRoot", err)
	}
	return errors.Join(errs...)
}

// NATSAuthSet reports whether any NATS login is configured (creds file,
// user, nkey).
func (c Config) NATSAuthSet() bool {
	return c.NATSCreds != "" || c.NATSUser != "" || c.NATSNKeyFile != ""
}

// CheckDataRoot is Validate's check of DataRoot alone, for code that opens
// the data root without the rest of the configuration (`worker exec`).
func (c Config) CheckDataRoot() error {
	if err := validateDataRoot(c.DataRoot); err != nil {
		return c.fieldErr("DataRoot", err)
	}
	return nil
}

// validateDataRoot refuses an empty data root and the filesystem root.
// Whether the directory exists is checked where it is opened (the worker at
// start, dataroot.Open), since not every binary uses it.
func validateDataRoot(dir string) error {
	if strings.TrimSpace(dir) == "" {
		return errors.New("empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if filepath.Dir(abs) == abs {
		return fmt.Errorf("%q is the filesystem root, which confines nothing; name the directory job files live in", dir)
	}
	return nil
}

func validateQueues(q map[string]int) error {
	if len(q) == 0 {
		return errors.New("no queues; want name=weight,...")
	}
	if len(q) > MaxQueues {
		return fmt.Errorf("%d queues, over the limit of %d", len(q), MaxQueues)
	}
	for _, name := range sortedQueueNames(q) {
		if err := ValidateQueueName(name); err != nil {
			return err
		}
		if w := q[name]; w < 1 || w > MaxQueueWeight {
			return fmt.Errorf("queue %q: weight %d is outside 1..%d", name, w, MaxQueueWeight)
		}
	}
	return nil
}

func validateNATSURLs(list string) error {
	if list == "" {
		return nil // embedded server
	}
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("%s: not a URL", RedactURL(raw))
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%s: scheme %q not supported; want nats://, tls://, ws:// or wss://", u.Redacted(), u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("%s: missing host", u.Redacted())
		}
	}
	return nil
}

// ParseQueues parses "name=weight,name=weight". Whitespace around items is
// ignored; a repeated name is an error.
func ParseQueues(s string) (map[string]int, error) {
	q := make(map[string]int)
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, weight, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, fmt.Errorf("%q: want name=weight", item)
		}
		if err := ValidateQueueName(name); err != nil {
			return nil, err
		}
		w, err := strconv.Atoi(strings.TrimSpace(weight))
		if err != nil || w < 1 || w > MaxQueueWeight {
			return nil, fmt.Errorf("queue %q: weight %q is not a number in 1..%d", name, weight, MaxQueueWeight)
		}
		if _, dup := q[name]; dup {
			return nil, fmt.Errorf("queue %q is listed twice", name)
		}
		q[name] = w
	}
	if len(q) == 0 {
		return nil, errors.New("no queues; want name=weight,...")
	}
	return q, nil
}

// FormatQueues is ParseQueues's inverse, heaviest queue first.
func FormatQueues(q map[string]int) string {
	names := sortedQueueNames(q)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.Itoa(q[n])
	}
	return strings.Join(parts, ",")
}

// sortedQueueNames orders by weight, heaviest first, then by name, so output
// and error messages are deterministic.
func sortedQueueNames(q map[string]int) []string {
	names := make([]string, 0, len(q))
	for n := range q {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if q[names[i]] != q[names[j]] {
			return q[names[i]] > q[names[j]]
		}
		return names[i] < names[j]
	})
	return names
}

func redactSecret(s string) string {
	if s == "" {
		return ""
	}
	return "xxxxx"
}

func redactURLList(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = RedactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// flag.Value implementations bound to Config fields. String must work on a
// zero value (the flag package builds one to spot zero defaults).

type stringValue struct {
	p      *string
	redact func(string) string // for values that may hold secrets
}

func (v *stringValue) Set(s string) error { *v.p = s; return nil }
func (v *stringValue) String() string {
	if v.p == nil {
		return ""
	}
	if v.redact != nil {
		return v.redact(*v.p)
	}
	return *v.p
}

type boolValue struct{ p *bool }

func (v *boolValue) IsBoolFlag() bool { return true }
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not a boolean", s)
	}
	*v.p = b
	return nil
}
func (v *boolValue) String() string {
	if v.p == nil {
		return "false"
	}
	return strconv.FormatBool(*v.p)
}

type intValue struct{ p *int }

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not an integer", s)
	}
	*v.p = n
	return nil
}
func (v *intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

type durationValue struct{ p *time.Duration }

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 30s or 5m", s)
	}
	*v.p = d
	return nil
}
func (v *durationValue) String() string {
	if v.p == nil {
		return "0s"
	}
	return v.p.String()
}

type queuesValue struct{ p *map[string]int }

func (v *queuesValue) Set(s string) error {
	q, err := ParseQueues(s)
	if err != nil {
		return err
	}
	*v.p = q
	return nil
}
func (v *queuesValue) String() string {
	if v.p == nil {
		return ""
	}
	return FormatQueues(*v.p)
}
