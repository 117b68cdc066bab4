package k8s

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// redisMemDB is the Redis database the measurement below owns and flushes.
const redisMemDB = 10

// BenchmarkRedisMemoryPerTask measures what one queued task costs in Redis
// memory, the figure docs/SCALING.md sizes Redis with: it enqueues tasks with
// asynq's client (a pending task is a hash plus a list entry) and compares
// INFO memory before and after. Run it alone, against a Redis nothing else
// writes to at the time:
//
//	go test -run '^$' -bench RedisMemoryPerTask -benchtime 1x ./k8s/
//
// TANDEM_TEST_REDIS_ADDR picks the Redis (default 127.0.0.1:6379); it uses
// database 10 and flushes it before and after.
func BenchmarkRedisMemoryPerTask(b *testing.B) {
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: redisMemDB})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		b.Skipf("no Redis at %s: %v", addr, err)
	}
	client := asynq.NewClientFromRedisClient(rdb)

	// A generate job's args as the producer enqueues them: about 150 bytes
	// of JSON, a task id, Tandem's retry budget and timeout.
	payload := func(i int) []byte {
		return fmt.Appendf(nil, `{"model":"builtin:small","input":"/srv/tandem/batches/b%06d/in.jsonl","output":"/srv/tandem/batches/b%06d/out.jsonl","batch_size":8}`, i, i)
	}
	cases := []struct {
		name    string
		payload func(int) []byte
	}{
		{"empty-payload", func(int) []byte { return nil }},
		{"generate-args", payload},
	}
	const tasks = 50_000
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				if err := rdb.FlushDB(ctx).Err(); err != nil {
					b.Fatal(err)
				}
				before := usedMemory(b, rdb)
				for i := range tasks {
					task := asynq.NewTask("generate", c.payload(i))
					_, err := client.Enqueue(task, asynq.Queue("default"), asynq.TaskID(fmt.Sprintf("batch-%06d:chunk-0", i)),
						asynq.MaxRetry(5), asynq.Timeout(2*time.Hour))
					if err != nil {
						b.Fatal(err)
					}
				}
				after := usedMemory(b, rdb)
				b.ReportMetric(float64(after-before)/tasks, "B/task")
				if err := rdb.FlushDB(ctx).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// usedMemory reads used_memory from INFO memory.
func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}
