package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// A private Redis makes `make demo` work on a laptop with redis-server
// installed but not running. It is started only for a loopback URL: a remote
// Redis that does not answer is an outage to report, not to paper over.
//
// Several Tandem processes (producer, worker, scheduler) share one private
// Redis through DataDir/redis: the first to get the lock starts it and writes
// its URL to DataDir/redis/url; the others find that URL and use it. Only the
// process that started the server stops it.

const (
	privateRedisStartTimeout = 10 * time.Second
	privateRedisStopTimeout  = 10 * time.Second
	pingTimeout              = time.Second
)

// EnsureRedis returns a Redis URL that answers: url itself if it answers
// PING (a rediss:// url is returned unprobed); else, for an empty or
// loopback url, a private redis-server under
// dataDir/redis (append-only file, fsync every second) on a free loopback
// port with a random password. stop shuts down a server this call started
// and is a no-op otherwise.
func EnsureRedis(ctx context.Context, url, dataDir string, logger *slog.Logger) (effectiveURL string, stop func() error, err error) {
	noop := func() error { return nil }
	if logger == nil {
		logger = slog.Default()
	}
	db := 0
	if url != "" {
		t, err := parseRedisURL(url)
		if err != nil {
			return "", nil, fmt.Errorf("redis URL: %w", err)
		}
		if t.tls {
			// TLS means a deployed Redis whose CA may come from config files
			// this function does not see; it is never replaced by a private
			// one, so there is nothing to probe.
			return url, noop, nil
		}
		perr := pingURL(ctx, url)
		if perr == nil {
			return url, noop, nil
		}
		if !isLoopbackHost(t.host) {
			return "", nil, fmt.Errorf("redis at %s does not answer: %w", RedactURL(url), perr)
		}
		db = t.db
		logger.Info("redis does not answer; using a private redis-server", "url", RedactURL(url), "error", perr)
	}
	if dataDir == "" {
		return "", nil, errors.New("private redis: empty data dir")
	}
	dir, err := filepath.Abs(filepath.Join(dataDir, "redis"))
	if err != nil {
		return "", nil, fmt.Errorf("private redis: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("private redis: %w", err)
	}
	unlock, err := lockDir(ctx, filepath.Join(dir, "lock"))
	if err != nil {
		return "", nil, fmt.Errorf("private redis: %w", err)
	}
	defer unlock()

	urlFile := filepath.Join(dir, "url")
	if b, err := os.ReadFile(urlFile); err == nil {
		shared := withDB(strings.TrimSpace(string(b)), db)
		if pingURL(ctx, shared) == nil {
			logger.Info("using the private redis-server another process started", "dir", dir)
			return shared, noop, nil
		}
	}

	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, fmt.Errorf("no Redis answers and redis-server is not installed: install it or set TANDEM_REDIS_URL: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		rs, err := startRedis(ctx, bin, dir)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue // most likely the port was taken between probe and bind
		}
		base := rs.url
		if err := os.WriteFile(urlFile, []byte(base+"\n"), 0o600); err != nil {
			_ = rs.stop()
			return "", nil, fmt.Errorf("private redis: %w", err)
		}
		logger.Info("started private redis-server", "dir", dir, "addr", rs.addr, "pid", rs.cmd.Process.Pid)
		stop := func() error {
			err := rs.stop()
			// Remove the URL only if it is still ours; a later process may
			// have replaced it after we died and came back.
			if b, rerr := os.ReadFile(urlFile); rerr == nil && strings.TrimSpace(string(b)) == base {
				_ = os.Remove(urlFile)
			}
			return err
		}
		return withDB(base, db), stop, nil
	}
	return "", nil, fmt.Errorf("private redis: %w", lastErr)
}

// privateRedis is a redis-server child process.
type privateRedis struct {
	cmd      *exec.Cmd
	url      string
	addr     string
	exited   chan struct{} // closed when Wait returns
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

func startRedis(ctx context.Context, bin, dir string) (*privateRedis, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	password := hex.EncodeToString(pw[:])
	// The password goes in a 0600 file rather than argv, which other local
	// users can read from /proc.
	conf := strings.Join([]string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		"dir " + strconv.Quote(dir),
		"appendonly yes",
		"appendfsync everysec",
		"requirepass " + password,
		"logfile redis.log",
		"daemonize no",
		"protected-mode yes",
	}, "\n") + "\n"
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, confPath)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	// Its own process group: a Ctrl-C meant for us must not kill Redis
	// before our graceful shutdown has handed running jobs back to it.
	cmd.SysProcAttr = detachedProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	rs := &privateRedis{
		cmd:    cmd,
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		exited: make(chan struct{}),
	}
	rs.url = "redis://:" + password + "@" + rs.addr + "/0"
	go func() {
		rs.waitErr = cmd.Wait()
		close(rs.exited)
	}()

	deadline := time.NewTimer(privateRedisStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if pingURL(ctx, rs.url) == nil {
			return rs, nil
		}
		select {
		case <-rs.exited:
			return nil, fmt.Errorf("redis-server exited at start (%v): %s%s", rs.waitErr,
				strings.TrimSpace(stderr.String()), tailFile(filepath.Join(dir, "redis.log")))
		case <-ctx.Done():
			_ = rs.stop()
			return nil, ctx.Err()
		case <-deadline.C:
			_ = rs.stop()
			return nil, fmt.Errorf("redis-server did not answer within %v%s", privateRedisStartTimeout, tailFile(filepath.Join(dir, "redis.log")))
		case <-tick.C:
		}
	}
}

// stop asks redis-server to shut down (SIGTERM: it flushes the append-only
// file) and kills it if it has not exited in time. The signal is repeated:
// redis-server 7 drops a SIGTERM that arrives while it forks for a
// background rewrite.
func (rs *privateRedis) stop() error {
	rs.stopOnce.Do(func() {
		deadline := time.NewTimer(privateRedisStopTimeout)
		defer deadline.Stop()
		resend := time.NewTicker(250 * time.Millisecond)
		defer resend.Stop()
		for {
			select {
			case <-rs.exited:
				return
			default:
			}
			_ = rs.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-rs.exited:
				return
			case <-resend.C:
			case <-deadline.C:
				_ = rs.cmd.Process.Kill()
				<-rs.exited
				rs.stopErr = fmt.Errorf("redis-server did not stop within %v; killed", privateRedisStopTimeout)
				return
			}
		}
	})
	return rs.stopErr
}

// tailFile returns the last lines of a log for an error message.
func tailFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 5 {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "; " + path + ": " + strings.Join(lines, " | ")
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// withDB replaces the database number of a redis URL we built ourselves.
func withDB(url string, db int) string {
	if i := strings.LastIndexByte(url, '/'); i > len("rediss://") {
		return url[:i+1] + strconv.Itoa(db)
	}
	return url
}

func pingURL(ctx context.Context, url string) error {
	t, err := parseRedisURL(url)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	// A bare TCP probe first: go-redis logs every failed dial to stderr,
	// which would fill a demo's output while a private server starts.
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return err
	}
	conn.Close()
	// One dial attempt and a pool larger than the number of failures: a
	// go-redis pool whose dial failures reach its size starts a background
	// redialer that outlives Close by up to a second.
	c := redis.NewClient(&redis.Options{
		Addr: t.addr, Username: t.username, Password: t.password, DB: t.db,
		DialTimeout: pingTimeout, MaxRetries: -1, DialerRetries: 1, PoolSize: 4,
	})
	defer c.Close()
	return c.Ping(ctx).Err()
}

// CheckRedisPersistence returns a warning if the Redis behind client keeps
// no append-only file and no RDB snapshots: a restart would then lose every
// queued job. Managed services that hide CONFIG are asked through INFO, which
// tells only about the append-only file; err is set if neither answers.
func CheckRedisPersistence(ctx context.Context, client redis.UniversalClient) (warning string, err error) {
	const warn = "Redis keeps neither an append-only file (appendonly) nor RDB snapshots (save): queued jobs and batch state are lost if it restarts; enable appendonly yes"
	aof, aerr := client.ConfigGet(ctx, "appendonly").Result()
	save, serr := client.ConfigGet(ctx, "save").Result()
	if aerr == nil && serr == nil {
		if aof["appendonly"] == "yes" || strings.TrimSpace(save["save"]) != "" {
			return "", nil
		}
		return warn, nil
	}
	info, ierr := client.Info(ctx, "persistence").Result()
	if ierr != nil {
		return "", fmt.Errorf("check redis persistence: CONFIG GET: %w; INFO: %w", errors.Join(aerr, serr), ierr)
	}
	for _, line := range strings.Split(info, "\n") {
		if strings.TrimSpace(line) == "aof_enabled:1" {
			return "", nil
		}
	}
	return "Redis keeps no append-only file and its snapshot settings cannot be read (CONFIG is disabled): make sure it persists, or queued jobs are lost on restart", nil
}
