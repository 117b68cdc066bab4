package pipeline

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestEnsureRedisUsesAnsweringURL(t *testing.T) {
	t.Parallel()
	url, stop, err := EnsureRedis(context.Background(), testRedisURL, t.TempDir(), discardLogger)
	if err != nil || url != testRedisURL {
		t.Fatalf("EnsureRedis = %q, %v; want the given URL", url, err)
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
}

func TestEnsureRedisRefusesRemoteOutage(t *testing.T) {
	t.Parallel()
	// 192.0.2.0/24 is reserved for documentation: nothing answers there.
	_, _, err := EnsureRedis(context.Background(), "redis://:secret@192.0.2.1:6379/0", t.TempDir(), discardLogger)
	if err == nil || !strings.Contains(err.Error(), "does not answer") || strings.Contains(err.Error(), "secret") {
		t.Errorf("EnsureRedis = %v; want an outage error without the password", err)
	}
}

func TestEnsureRedisStartsPrivateServer(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	t.Parallel()
	ctx := context.Background()
	dataDir := t.TempDir()
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	dead := "redis://127.0.0.1:" + strconv.Itoa(port) + "/3"

	url, stop, err := EnsureRedis(ctx, dead, dataDir, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	if url == dead || !strings.HasSuffix(url, "/3") {
		t.Errorf("private URL %s; want a new address keeping database 3", RedactURL(url))
	}
	if err := pingURL(ctx, url); err != nil {
		t.Fatalf("private redis does not answer: %v", err)
	}
	if err := pingURL(ctx, withDB(url, 0)[:strings.Index(url, "@")+1]+"127.0.0.1:1/0"); err == nil {
		t.Fatal("sanity: a closed port answered")
	}

	// A second process with the same data dir shares the server.
	url2, stop2, err := EnsureRedis(ctx, dead, dataDir, discardLogger)
	if err != nil || url2 != url {
		t.Errorf("second EnsureRedis = %q, %v; want the running server", RedactURL(url2), err)
	}
	if err := stop2(); err != nil {
		t.Error(err)
	}
	if err := pingURL(ctx, url); err != nil {
		t.Fatalf("the sharer's stop stopped the server: %v", err)
	}

	cfg := DefaultConfig()
	cfg.RedisURL = url
	rdb, err := cfg.RedisClient()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if w, err := CheckRedisPersistence(ctx, rdb); w != "" || err != nil {
		t.Errorf("private redis persistence: %q, %v; want AOF on", w, err)
	}
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"appendonly", "no"}, {"save", ""}} {
		if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if w, err := CheckRedisPersistence(ctx, rdb); w == "" || err != nil {
		t.Errorf("persistence off: %q, %v; want a warning", w, err)
	}
	if err := rdb.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}

	stopped = true
	if err := stop(); err != nil {
		t.Fatal(err, tailFile(filepath.Join(dataDir, "redis", "redis.log")))
	}
	if err := pingURL(ctx, url); err == nil {
		t.Error("private redis still answers after stop")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "redis", "url")); !os.IsNotExist(err) {
		t.Errorf("url file left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "redis", "appendonlydir")); err != nil {
		t.Errorf("no append-only files: %v", err)
	}

	// The data survives a restart in the same directory.
	url3, stop3, err := EnsureRedis(ctx, "", dataDir, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	defer stop3()
	c := redis.NewClient(mustRedisOptions(t, withDB(url3, 3)))
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if v, err := c.Get(rctx, "k").Result(); v != "v" || err != nil {
		t.Errorf("after restart: %q, %v; want the key back from the append-only file", v, err)
	}
}

func mustRedisOptions(t *testing.T, url string) *redis.Options {
	t.Helper()
	cfg := DefaultConfig()
	cfg.RedisURL = url
	o, err := cfg.redisOptions()
	if err != nil {
		t.Fatal(err)
	}
	return o
}
