package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// natsServerFallback is where Debian's nats-server package puts the
// binary, which is not on a normal user's PATH.
const natsServerFallback = "/usr/sbin/nats-server"

// natsServerPath finds nats-server: on PATH, else the Debian location.
func natsServerPath() (string, error) {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat(natsServerFallback); err != nil {
		return "", fmt.Errorf("nats-server neither on PATH nor at %s (Debian package nats-server): %w", natsServerFallback, err)
	}
	return natsServerFallback, nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// poll calls ok until it returns nil, the timeout passes, or the run ends.
func (h *harness) poll(what string, timeout, every time.Duration, ok func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = ok(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w", what, timeout, last)
		}
		select {
		case <-h.context().Done():
			return fmt.Errorf("%s: %w", what, h.context().Err())
		case <-time.After(every):
		}
	}
}

// newRedis describes a private redis-server with AOF (fsync every second)
// in DIR/redis, so that a SIGKILL and a restart reload what it had.
func (h *harness) newRedis(port int) (*proc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not on PATH (make deps installs it): %w", err)
	}
	dir := filepath.Join(h.dir, "redis")
	argv := []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--dir", dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"}
	h.redisAddr = fmt.Sprintf("127.0.0.1:%d", port)
	h.rdb = redis.NewClient(&redis.Options{Addr: h.redisAddr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		WriteTimeout: 2 * time.Second, MaxRetries: -1})
	return h.newProc("redis", argv, func(h *harness) error {
		return h.poll("redis PING", 20*time.Second, 100*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(h.context(), time.Second)
			defer cancel()
			// LOADING answers PING with an error until the AOF is replayed.
			return h.rdb.Ping(ctx).Err()
		})
	}), nil
}

// newNATS describes a nats-server child with JetStream on disk in DIR/nats.
func (h *harness) newNATS(bin string, port int) *proc {
	argv := []string{bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(h.dir, "nats")}
	h.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	return h.newProc("nats", argv, func(h *harness) error {
		return h.poll("nats JetStream", 20*time.Second, 100*time.Millisecond, func() error {
			nc, err := nats.Connect(h.natsURL, nats.Timeout(time.Second), nats.NoReconnect())
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := nc.JetStream(nats.MaxWait(time.Second))
			if err != nil {
				return err
			}
			_, err = js.AccountInfo()
			return err
		})
	})
}

// healthy waits for a binary's /healthz on its admin address.
func healthy(addr string) func(*harness) error {
	return func(h *harness) error {
		client := &http.Client{Timeout: time.Second}
		return h.poll("GET http://"+addr+"/healthz", 45*time.Second, 200*time.Millisecond, func() error {
			resp, err := client.Get("http://" + addr + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}
}
