package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// deviceTestRedisDB is this file's Redis database, flushed before and
// after.
const deviceTestRedisDB = "5"

func TestEnqueueDeviceRoutesToGPUQueue(t *testing.T) {
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	url := "redis://" + addr + "/" + deviceTestRedisDB
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	if err := rc.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	t.Cleanup(func() { rc.FlushDB(context.Background()) })
	args := filepath.Join(t.TempDir(), "ping.json")
	if err := os.WriteFile(args, []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	enqueue := func(extra ...string) (TaskView, error) {
		var out, errs bytes.Buffer
		err := cmdEnqueue(context.Background(), append([]string{jobs.KindPing, "--redis-url", url, "--args", args}, extra...), &out, &errs)
		var v TaskView
		if err == nil {
			err = json.Unmarshal(out.Bytes(), &v)
		}
		return v, err
	}
	for _, c := range []struct {
		flags []string
		queue string
	}{
		{[]string{"--device", "cuda"}, pipeline.QueueGPU},
		{[]string{"--device", "cuda:1", "--queue", "gpu"}, pipeline.QueueGPU},
		{[]string{"--device", "cpu"}, pipeline.QueueDefault},
		{nil, pipeline.QueueDefault},
	} {
		v, err := enqueue(c.flags...)
		if err != nil || v.Queue != c.queue {
			t.Errorf("enqueue %v: queue %q, %v; want %q", c.flags, v.Queue, err, c.queue)
		}
	}
	for _, flags := range [][]string{{"--device", "cuda", "--queue", "default"}, {"--device", "cpu", "--queue", "gpu"}, {"--device", "tpu"}} {
		if _, err := enqueue(flags...); err == nil || !strings.Contains(err.Error(), "--device") {
			t.Errorf("enqueue %v: %v, want a --device error", flags, err)
		}
	}
}
