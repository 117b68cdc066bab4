package jobs

import (
	"context"
	"testing"

	"github.com/tandem-ai/tandem/internal/redistest"
)

// Counting a shard answers a repeat of the same call (same token, as
// go-redis sends it after a read timeout) as it answered the call, and
// another run of the shard as not counted.
func TestRecsShardDoneAnswersARepeatAlike(t *testing.T) {
	rdb := redistest.StartVolatile(t).Client(t)
	ctx := context.Background()
	key := []string{recsRebuildDoneKey("r1")}
	for i := range 2 {
		out, err := recsShardDone.Run(ctx, rdb, key, 0, "task-1 tok-a", 60).Int64Slice()
		if err != nil || len(out) != 2 || out[0] != 1 || out[1] != 1 {
			t.Fatalf("run %d of the counting call: %v, %v; want [1 1]", i+1, out, err)
		}
	}
	out, err := recsShardDone.Run(ctx, rdb, key, 0, "task-1 tok-b", 60).Int64Slice()
	if err != nil || len(out) != 2 || out[0] != 0 || out[1] != 1 {
		t.Fatalf("another run of the shard: %v, %v; want [0 1]", out, err)
	}
}
