package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// demoInteractions is the generated interaction log the scheduler's live
// recommender starts from and the rebuild reads.
func demoInteractions(dir string) string { return filepath.Join(dir, "interactions.csv") }

// writeDemoInteractions writes 300 users x 100 items of synthetic behaviour
// with planted taste groups. It runs before the scheduler starts, which
// loads the same file.
func writeDemoInteractions(dir string) error {
	f, err := os.Create(demoInteractions(dir))
	if err != nil {
		return err
	}
	cfg := recsys.SynthConfig{Users: 300, Items: 100, Interactions: 6000, Groups: 5, Noise: 0.1, Rejections: 0.2, Kinds: []string{"template", "topic"}, Seed: 1}
	if err := recsys.WriteSynthCSV(f, cfg); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// demoRecsView is the part of `producer recs` output the demo reads.
type demoRecsView struct {
	Generation int64           `json:"generation"`
	Items      []recsys.Scored `json:"items"`
}

func (d *demo) recs(ctx context.Context, user string) (demoRecsView, error) {
	out, err := d.output(ctx, "producer", "recs", user, "--n", "5")
	if err != nil {
		return demoRecsView{}, err
	}
	var v demoRecsView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return v, fmt.Errorf("producer recs: %w", err)
	}
	return v, nil
}

// resetRecs forgets an earlier demo run's recommender state in Redis: its
// base record and log name snapshots in the data directory the demo has
// just deleted, and a run stopped mid-rebuild leaves the rebuild lock.
func resetRecs(ctx context.Context, redisURL string) error {
	cfg := pipeline.DefaultConfig()
	cfg.RedisURL = redisURL
	rdb, err := cfg.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := rdb.Del(ctx, jobs.KeyRecsBase, recsys.KeyLog, jobs.KeyRecsRebuildLock).Err(); err != nil {
		return fmt.Errorf("reset the recommender's state: %w", err)
	}
	return nil
}

// awaitTask waits until a job another job enqueues exists.
func (d *demo) awaitTask(ctx context.Context, id string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := d.output(ctx, "producer", "status", id); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %s was not enqueued within 2 minutes (see %s)", id, d.logPath("worker"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func itemList(items []recsys.Scored) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = fmt.Sprintf("%s (%.2f)", it.Item, it.Score)
	}
	return strings.Join(parts, ", ")
}

// demoRecs runs the nightly rebuild through the queue as the scheduler's
// cron would, in shards, which swaps the lists into Redis; then it sends
// feedback over NATS and watches the scheduler's live model rewrite the
// user's list.
func demoRecs(ctx context.Context, d *demo) error {
	step("recommendations: sharded nightly rebuild through the queue, then live feedback over NATS")
	in := demoInteractions(d.files)
	fmt.Printf("   interactions: %s (300 users, 100 items, 6000 events, 5 taste groups)\n", in)
	// The default neighbours and list length, the ones the scheduler's live
	// model starts with, so its lists agree with the rebuild's whether or
	// not it has reloaded from the rebuild when the feedback arrives.
	id, err := d.enqueue(ctx, jobs.KindRecsFanout, map[string]any{"interactions": in, "shards": 4})
	if err != nil {
		return err
	}
	if err := d.follow(ctx, id); err != nil {
		return err
	}
	// The last shard to finish enqueues the merge, which swaps the lists in.
	merge := jobs.RecsRebuildID(id) + ":merge"
	if err := d.awaitTask(ctx, merge); err != nil {
		return err
	}
	if err := d.follow(ctx, merge); err != nil {
		return err
	}
	before, err := d.recs(ctx, "u1")
	if err != nil {
		return err
	}
	if len(before.Items) < 2 {
		return fmt.Errorf("u1 has %d recommendations after the rebuild", len(before.Items))
	}
	fmt.Printf("   producer recs u1 (generation %d): %s\n", before.Generation, itemList(before.Items))

	// u1 buys its top two recommendations and views a third item: the
	// bought items become seen and must leave the list.
	events := [][]string{
		{"--user", "u1", "--item", before.Items[0].Item, "--event", "purchase"},
		{"--user", "u1", "--item", before.Items[1].Item, "--event", "purchase"},
		{"--user", "u1", "--item", "i99", "--event", "view", "--value", "3"},
	}
	for _, ev := range events {
		out, err := d.output(ctx, "producer", append([]string{"feedback"}, ev...)...)
		if err != nil {
			return err
		}
		var v struct{ ID, Subject string }
		_ = json.Unmarshal([]byte(out), &v)
		fmt.Printf("   producer feedback %s -> %s (id %.8s…)\n", strings.Join(ev, " "), v.Subject, v.ID)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := d.recs(ctx, "u1")
		if err != nil {
			return err
		}
		if itemList(after.Items) != itemList(before.Items) {
			fmt.Printf("   before: %s\n   after:  %s\n", itemList(before.Items), itemList(after.Items))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("u1's recommendations did not change within 30s of the feedback (see %s)", d.logPath("scheduler"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
