package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// The nightly rebuild fans out over asynq in three kinds:
//
//  1. recs:rebuild-fanout (the scheduler's cron enqueues it under a
//     deterministic task id) takes the rebuild lock, writes the snapshot
//     (the current base plus the interaction log up to its newest entry),
//     cuts each side's rows into ranges and enqueues one shard task per
//     range, task id <rebuild>:<shard>. Shard task p computes range p of
//     both sides, so each loads the snapshot once for two ranges.
//  2. recs:rebuild-shard loads the snapshot, computes its rows
//     (recsys.BuildShard), writes them to the artifact store, and only then
//     counts itself in the rebuild's done-set (HSETNX, so a retried shard
//     never counts twice). The shard that completes the set enqueues the
//     merge, task id <rebuild>:merge.
//  3. recs:rebuild-merge joins the shards (recsys.Merge, which refuses
//     shards of other data or settings), publishes every user's list as a
//     new serving generation (an atomic swap: readers see the old or the
//     new set), makes the snapshot the new base, trims the log entries
//     every kept snapshot holds, and announces recs.rebuilt.
//
// Every step can run again after a crash: the plan is written once, shard
// files are replaced whole, counting is idempotent, task ids stop duplicate
// enqueues, and the merge of a merged rebuild does nothing. A step that
// fails for good (a permanent error, or its last attempt) abandons the
// rebuild: its files are deleted and the lock released (abandonRecsRebuild).

// Kinds of the sharded rebuild.
const (
	KindRecsFanout = "recs:rebuild-fanout"
	KindRecsShard  = "recs:rebuild-shard"
	KindRecsMerge  = "recs:rebuild-merge"
)

// Limits and defaults of the sharded rebuild.
const (
	// DefaultRecsShards is how many row ranges each side is cut into, and
	// so how many shard tasks a rebuild has.
	DefaultRecsShards = 8
	// MaxRecsShards bounds the shards per side.
	MaxRecsShards = 256
	// RecsRebuildLockTTL bounds how long a rebuild that died keeps the next
	// one from starting.
	RecsRebuildLockTTL = 6 * time.Hour
	// recsRecordTTL keeps a rebuild's plan and done-set for inspection.
	recsRecordTTL = 7 * 24 * time.Hour
	// recsTaskRetention keeps finished shard and merge tasks, and so their
	// ids, long enough that a retried fan-out does not run them again.
	recsTaskRetention = time.Hour
)

// EventRecsRebuilt is the lifecycle event type a merged rebuild announces
// on tandem.events.recs.rebuilt; its data is the new RecsBase.
const EventRecsRebuilt = "recs.rebuilt"

// eventSchema is the lifecycle envelope's version (docs/EVENTS.md).
const eventSchema = "tandem.event/v1"

// Status values of a rebuild record.
const (
	recsStatusPlanned   = "planned"
	recsStatusMerged    = "merged"
	recsStatusAbandoned = "abandoned" // a step failed for good; "error" says why
)

// KeyRecsRebuildLock holds the id of the rebuild running, for
// RecsRebuildLockTTL at most.
var KeyRecsRebuildLock = pipeline.Key("recs", "rebuilding")

func recsRebuildKey(id string) string     { return pipeline.Key("recs", "rebuild", id) }
func recsRebuildDoneKey(id string) string { return pipeline.Key("recs", "rebuild", id, "done") }

func recsArtifactKey(id, name string) string { return "recs/rebuilds/" + id + "/" + name }

func recsShardKey(id string, side recsys.Side, shard int) string {
	return recsArtifactKey(id, fmt.Sprintf("%v-%04d.shard", side, shard))
}

// RecsRebuildID turns a task id into a rebuild id usable in keys, artifact
// keys and subjects: the id itself when it is made of A-Z a-z 0-9 _ -,
// else those characters kept, the others turned into '-', and a hash of
// the original appended so that two ids cannot meet.
func RecsRebuildID(taskID string) string {
	if pipeline.ValidateID(taskID) == nil {
		return taskID
	}
	clean := []byte(taskID)
	for i, c := range clean {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			clean[i] = '-'
		}
	}
	if len(clean) > 100 {
		clean = clean[:100]
	}
	h := fnv.New32a()
	h.Write([]byte(taskID))
	return fmt.Sprintf("%s-%08x", clean, h.Sum32())
}

// RecsFanoutArgs starts a sharded rebuild.
type RecsFanoutArgs struct {
	// Interactions is the initial interaction file (.csv or .jsonl), read
	// only while no rebuild has written a snapshot; later rebuilds start
	// from the last snapshot and the interaction log. Optional.
	Interactions string `json:"interactions,omitempty"`
	// Shards is how many row ranges each side is cut into; default 8.
	Shards int `json:"shards,omitempty"`
	// Neighbors is K of both similarity tables; default 50.
	Neighbors int `json:"neighbors,omitempty"`
	// Top is the list length per user; default 20.
	Top int `json:"top,omitempty"`
	// Mode is "user" (default) or "item".
	Mode string `json:"mode,omitempty"`
}

// Kind implements pipeline.JobArgs.
func (RecsFanoutArgs) Kind() string { return KindRecsFanout }

// jobPaths implements pathArgs.
func (a RecsFanoutArgs) jobPaths() []JobPath { return []JobPath{{"interactions", a.Interactions}} }

// KindOptions implements pipeline.KindOptioner.
func (RecsFanoutArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueDefault, MaxRetry: 5, Timeout: time.Hour}
}

// Validate implements pipeline.Validator.
func (a RecsFanoutArgs) Validate() error {
	if a.Shards < 0 || a.Shards > MaxRecsShards {
		return fmt.Errorf("shards: %d out of range [1, %d]", a.Shards, MaxRecsShards)
	}
	if a.Interactions != "" {
		if err := dataroot.CheckPath("interactions", a.Interactions); err != nil {
			return err
		}
	}
	return checkRecsKnobs(a.Mode, a.Neighbors, a.Top)
}

// RecsShardArgs computes row range Shard of each side of a planned rebuild
// (a side with fewer ranges than Shard has none to compute).
type RecsShardArgs struct {
	Rebuild string `json:"rebuild"`
	Shard   int    `json:"shard"`
}

// Kind implements pipeline.JobArgs.
func (RecsShardArgs) Kind() string { return KindRecsShard }

// KindOptions implements pipeline.KindOptioner.
func (RecsShardArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueDefault, MaxRetry: 5, Timeout: time.Hour}
}

// Validate implements pipeline.Validator.
func (a RecsShardArgs) Validate() error {
	if err := pipeline.ValidateID(a.Rebuild); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if a.Shard < 0 || a.Shard >= MaxRecsShards {
		return fmt.Errorf("shard: %d out of range [0, %d)", a.Shard, MaxRecsShards)
	}
	return nil
}

// RecsMergeArgs merges a rebuild's shards and swaps the served lists.
type RecsMergeArgs struct {
	Rebuild string `json:"rebuild"`
}

// Kind implements pipeline.JobArgs.
func (RecsMergeArgs) Kind() string { return KindRecsMerge }

// KindOptions implements pipeline.KindOptioner.
func (RecsMergeArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueDefault, MaxRetry: 10, Timeout: time.Hour}
}

// Validate implements pipeline.Validator.
func (a RecsMergeArgs) Validate() error {
	if err := pipeline.ValidateID(a.Rebuild); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	return nil
}

// recsPlan is what the fan-out decided, kept in the rebuild record.
type recsPlan struct {
	Rebuild   string        `json:"rebuild"`
	Snapshot  string        `json:"snapshot"`
	LogID     string        `json:"log_id"`
	Shards    [2]int        `json:"shards"` // per side, recsys.Side order
	Neighbors int           `json:"neighbors,omitempty"`
	Top       int           `json:"top,omitempty"`
	Mode      string        `json:"mode,omitempty"`
	Stats     snapshotStats `json:"stats"`
}

// tasks is the number of shard tasks: range p of both sides is task p.
func (p recsPlan) tasks() int { return max(p.Shards[0], p.Shards[1]) }

// loadRecsPlan reads a rebuild's plan and status; a missing plan is
// permanent (the fan-out never planned it, or the record expired).
func loadRecsPlan(ctx context.Context, rdb redis.UniversalClient, id string) (recsPlan, string, error) {
	var p recsPlan
	vals, err := rdb.HMGet(ctx, recsRebuildKey(id), "plan", "status").Result()
	if err != nil {
		return p, "", fmt.Errorf("rebuild %s: %w", id, err)
	}
	raw, _ := vals[0].(string)
	status, _ := vals[1].(string)
	if raw == "" {
		return p, "", pipeline.Permanent(fmt.Errorf("rebuild %s: no plan in %s", id, recsRebuildKey(id)))
	}
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return p, "", pipeline.Permanent(fmt.Errorf("rebuild %s: plan: %w", id, err))
	}
	return p, status, nil
}

// RecsFanoutResult is what recs:rebuild-fanout keeps as its result.
type RecsFanoutResult struct {
	Rebuild  string `json:"rebuild"`
	Snapshot string `json:"snapshot"`
	LogID    string `json:"log_id"`
	Shards   [2]int `json:"shards"`
	Events   int    `json:"events"`
	Logged   int    `json:"logged"`
	Skipped  int    `json:"skipped,omitempty"`
	Users    int    `json:"users"`
	Items    int    `json:"items"`
}

// RecsFanoutWorker runs recs:rebuild-fanout.
type RecsFanoutWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w RecsFanoutWorker) Work(ctx context.Context, job *pipeline.Job[RecsFanoutArgs]) (err error) {
	rdb, arts, err := recsBackends(w.Deps)
	if err != nil {
		return err
	}
	id := RecsRebuildID(job.ID)
	ok, err := rdb.SetNX(ctx, KeyRecsRebuildLock, id, RecsRebuildLockTTL).Result()
	if err != nil {
		return fmt.Errorf("rebuild lock: %w", err)
	}
	if !ok {
		holder, err := rdb.Get(ctx, KeyRecsRebuildLock).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("rebuild lock: %w", err)
		}
		if holder != id {
			return pipeline.Permanent(fmt.Errorf("rebuild %s is still running (%s); rebuild %s is skipped", holder, KeyRecsRebuildLock, id))
		}
	}
	// From here on the lock is this rebuild's.
	defer func() { err = abandonRecsRebuild(ctx, w.Deps, rdb, arts, id, job.Retried, job.MaxRetry, err) }()
	plan, status, err := loadRecsPlan(ctx, rdb, id)
	switch {
	case err == nil && status == recsStatusMerged:
		return keepResult(job.ResultWriter, plan.result())
	case err == nil && status == recsStatusAbandoned:
		return pipeline.Permanent(fmt.Errorf("rebuild %s was abandoned; a new one needs a new task id", id))
	case err == nil: // planned before a crash: enqueue the shards again
	case pipeline.IsPermanent(err): // no plan yet
		if plan, err = w.plan(ctx, rdb, arts, id, job.Args); err != nil {
			return err
		}
	default:
		return err
	}
	for p := range plan.tasks() {
		if err := enqueueOnce(ctx, rdb, RecsShardArgs{Rebuild: id, Shard: p}, fmt.Sprintf("%s:%d", id, p)); err != nil {
			return err
		}
	}
	w.Deps.logger().Info("recs rebuild fanned out", "rebuild", id, "log_id", plan.LogID,
		"users", plan.Stats.Users, "items", plan.Stats.Items, "shards", plan.Shards)
	return keepResult(job.ResultWriter, plan.result())
}

func (p recsPlan) result() RecsFanoutResult {
	return RecsFanoutResult{Rebuild: p.Rebuild, Snapshot: p.Snapshot, LogID: p.LogID, Shards: p.Shards,
		Events: p.Stats.Events, Logged: p.Stats.Logged, Skipped: p.Stats.Skipped, Users: p.Stats.Users, Items: p.Stats.Items}
}

// plan writes the snapshot and the plan of a new rebuild.
func (w RecsFanoutWorker) plan(ctx context.Context, rdb redis.UniversalClient, arts artifact.Store, id string, a RecsFanoutArgs) (recsPlan, error) {
	base, ok, err := LoadRecsBase(ctx, rdb)
	if err != nil {
		return recsPlan{}, err
	}
	if !ok {
		base = RecsBase{LogID: recsys.LogStart}
	}
	log := recsys.NewInteractionLog(rdb, recsys.InteractionLogOptions{})
	upto, err := log.Last(ctx)
	if err != nil {
		return recsPlan{}, err
	}
	if recsys.CompareLogIDs(upto, base.LogID) < 0 {
		upto = base.LogID
	}
	key := recsArtifactKey(id, "snapshot.csv")
	root, err := w.Deps.DataRoot()
	if err != nil {
		return recsPlan{}, err
	}
	openInitial := func(p string) (io.ReadCloser, error) { return root.Open("interactions", p) }
	st, stats, err := writeSnapshot(ctx, arts, key, base, a.Interactions, openInitial, log, upto)
	if err != nil {
		if permanentRecsErr(err) {
			return recsPlan{}, pipeline.Permanent(err)
		}
		return recsPlan{}, err
	}
	shards := a.Shards
	if shards == 0 {
		shards = DefaultRecsShards
	}
	plan := recsPlan{Rebuild: id, Snapshot: key, LogID: upto, Neighbors: a.Neighbors, Top: a.Top, Mode: a.Mode, Stats: stats,
		Shards: [2]int{len(recsys.ShardRanges(st.Users(), shards)), len(recsys.ShardRanges(st.Items(), shards))}}
	b, err := json.Marshal(plan)
	if err != nil {
		return plan, err
	}
	_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, recsRebuildKey(id), "plan", b, "status", recsStatusPlanned)
		p.Expire(ctx, recsRebuildKey(id), recsRecordTTL)
		return nil
	})
	if err != nil {
		return plan, fmt.Errorf("rebuild %s: plan: %w", id, err)
	}
	return plan, nil
}

// RecsShardResult is what recs:rebuild-shard keeps as its result.
type RecsShardResult struct {
	Rebuild string `json:"rebuild"`
	Shard   int    `json:"shard"`
	// Ranges are the rows computed per side, [lo, hi); none when the side
	// has fewer ranges.
	Ranges map[string][2]int `json:"ranges,omitempty"`
	// Counted is false when an earlier run of the shard was counted already.
	Counted bool `json:"counted"`
	Done    int  `json:"done"`
	Total   int  `json:"total"`
}

// recsShardDone counts a finished shard once: ARGV[1] joins the done-set
// KEYS[1] with ARGV[2], a token of the call, only if absent. A shard
// already there with the same token was counted by this very call (go-redis
// sent it again after a read timeout), so it answers added again. It
// returns {added, shards done}.
var recsShardDone = redis.NewScript(`
local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if added == 0 and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then added = 1 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {added, redis.call('HLEN', KEYS[1])}
`)

// RecsShardWorker runs recs:rebuild-shard.
type RecsShardWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w RecsShardWorker) Work(ctx context.Context, job *pipeline.Job[RecsShardArgs]) (err error) {
	a := job.Args
	rdb, arts, err := recsBackends(w.Deps)
	if err != nil {
		return err
	}
	defer func() { err = abandonRecsRebuild(ctx, w.Deps, rdb, arts, a.Rebuild, job.Retried, job.MaxRetry, err) }()
	plan, status, err := loadRecsPlan(ctx, rdb, a.Rebuild)
	if err != nil {
		return err
	}
	res := RecsShardResult{Rebuild: a.Rebuild, Shard: a.Shard, Total: plan.tasks(), Ranges: map[string][2]int{}}
	switch status {
	case recsStatusMerged:
		return keepResult(job.ResultWriter, res)
	case recsStatusAbandoned:
		return errRecsAbandoned(a.Rebuild)
	}
	if a.Shard >= plan.tasks() {
		return pipeline.Permanent(fmt.Errorf("shard %d: the plan has %d shards", a.Shard, plan.tasks()))
	}
	st, err := LoadRecsData(ctx, arts, plan.Snapshot, "")
	if err != nil {
		return recsDataErr(err)
	}
	for _, side := range []recsys.Side{recsys.SideUsers, recsys.SideItems} {
		if a.Shard >= plan.Shards[side] {
			continue
		}
		rows := st.Users()
		if side == recsys.SideItems {
			rows = st.Items()
		}
		ranges := recsys.ShardRanges(rows, plan.Shards[side])
		if len(ranges) != plan.Shards[side] {
			return pipeline.Permanent(fmt.Errorf("snapshot %s has %d %v, which the plan cut into %d shards", plan.Snapshot, rows, side, plan.Shards[side]))
		}
		rg := ranges[a.Shard]
		sh, err := recsys.BuildShard(ctx, st, RecsConfig(plan.Neighbors), side, rg[0], rg[1])
		if err != nil {
			return err
		}
		if err := putStreamed(ctx, arts, recsShardKey(a.Rebuild, side, a.Shard), sh.WriteTo); err != nil {
			return fmt.Errorf("shard %d, %v: %w", a.Shard, side, err)
		}
		res.Ranges[side.String()] = rg
	}
	// A rebuild abandoned while this shard ran has deleted its files,
	// perhaps before these were written: abandoning again deletes them. (It
	// marks the rebuild before it deletes, so one of the two sees them.)
	if _, status, err := loadRecsPlan(ctx, rdb, a.Rebuild); err != nil || status == recsStatusAbandoned {
		return cmp.Or(err, errRecsAbandoned(a.Rebuild))
	}
	// Counted only once the files are whole: the merge never reads a shard
	// that is missing or half-written.
	token := job.ID + " " + rand.Text() // fresh per run: a retried task's run is another call
	out, err := recsShardDone.Run(ctx, rdb, []string{recsRebuildDoneKey(a.Rebuild)}, a.Shard, token, int64(recsRecordTTL/time.Second)).Int64Slice()
	if err != nil {
		return fmt.Errorf("shard %d: count: %w", a.Shard, err)
	}
	res.Counted, res.Done = out[0] == 1, int(out[1])
	if res.Done >= res.Total {
		if err := enqueueOnce(ctx, rdb, RecsMergeArgs{Rebuild: a.Rebuild}, a.Rebuild+":merge"); err != nil {
			return err
		}
	}
	return keepResult(job.ResultWriter, res)
}

// RecsMergeResult is what recs:rebuild-merge keeps as its result.
type RecsMergeResult struct {
	Rebuild    string `json:"rebuild"`
	Generation int64  `json:"generation"`
	Published  int    `json:"published"`
	LogID      string `json:"log_id"`
	// Trimmed counts the log entries dropped: those every kept snapshot holds.
	Trimmed int64 `json:"trimmed"`
}

// RecsMergeWorker runs recs:rebuild-merge.
type RecsMergeWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w RecsMergeWorker) Work(ctx context.Context, job *pipeline.Job[RecsMergeArgs]) (err error) {
	id := job.Args.Rebuild
	rdb, arts, err := recsBackends(w.Deps)
	if err != nil {
		return err
	}
	defer func() { err = abandonRecsRebuild(ctx, w.Deps, rdb, arts, id, job.Retried, job.MaxRetry, err) }()
	plan, status, err := loadRecsPlan(ctx, rdb, id)
	if err != nil {
		return err
	}
	res := RecsMergeResult{Rebuild: id, LogID: plan.LogID}
	switch status {
	case recsStatusMerged:
		return keepResult(job.ResultWriter, res)
	case recsStatusAbandoned:
		return errRecsAbandoned(id)
	}
	cur, ok, err := LoadRecsBase(ctx, rdb)
	if err != nil {
		return err
	}
	if ok && cur.Rebuild != id && recsys.CompareLogIDs(cur.LogID, plan.LogID) > 0 {
		return pipeline.Permanent(fmt.Errorf("rebuild %s reaches log entry %s, past this one's %s; its lists stay", cur.Rebuild, cur.LogID, plan.LogID))
	}
	// A merge that crashed after moving the base has published already;
	// publishing again would overwrite the live updates made since.
	published := ok && cur.Rebuild == id
	if published {
		res.Generation = cur.Generation
	} else if res.Generation, res.Published, err = w.publish(ctx, rdb, arts, plan); err != nil {
		return err
	}
	next := RecsBase{Rebuild: id, Snapshot: plan.Snapshot, LogID: plan.LogID, Generation: res.Generation,
		Neighbors: plan.Neighbors, Top: plan.Top, Mode: plan.Mode, Time: time.Now().UTC()}
	prev, hadPrev, stored, err := advanceRecsBase(ctx, rdb, next)
	if err != nil {
		return err
	}
	if stored && published {
		next = cur
	}
	if stored && hadPrev {
		// Entries before the previous snapshot's end are in both kept
		// snapshots; a live model still on the previous base can follow
		// the log from there until it reloads.
		if res.Trimmed, err = recsys.NewInteractionLog(rdb, recsys.InteractionLogOptions{}).TrimBefore(ctx, prev.LogID); err != nil {
			return err
		}
		if prev.Prev != nil && prev.Prev.Snapshot != "" && prev.Prev.Snapshot != plan.Snapshot {
			deleteRecsRebuildFiles(ctx, w.Deps.logger(), arts, prev.Prev.Rebuild)
		}
	}
	for _, side := range []recsys.Side{recsys.SideUsers, recsys.SideItems} {
		for p := range plan.Shards[side] {
			if err := arts.Delete(ctx, recsShardKey(id, side, p)); err != nil {
				w.Deps.logger().Warn("recs shard file kept", "rebuild", id, "err", err)
			}
		}
	}
	if err := rdb.HSet(ctx, recsRebuildKey(id), "status", recsStatusMerged, "generation", res.Generation).Err(); err != nil {
		return fmt.Errorf("rebuild %s: %w", id, err)
	}
	if err := releaseRecsLock(ctx, rdb, id); err != nil {
		return err
	}
	if stored {
		if err := w.announce(ctx, next); err != nil {
			// The swap is done and live models watch the base record; the
			// event is for other systems, so a failure is only logged.
			w.Deps.logger().Warn("recs.rebuilt event not published", "rebuild", id, "err", err)
		}
	}
	w.Deps.logger().Info("recs rebuild merged", "rebuild", id, "generation", res.Generation, "users", res.Published, "log_id", plan.LogID, "trimmed", res.Trimmed)
	return keepResult(job.ResultWriter, res)
}

// publish merges the shards of a planned rebuild and publishes every
// user's list as a new serving generation.
func (w RecsMergeWorker) publish(ctx context.Context, rdb redis.UniversalClient, arts artifact.Store, plan recsPlan) (gen int64, users int, err error) {
	st, err := LoadRecsData(ctx, arts, plan.Snapshot, "")
	if err != nil {
		return 0, 0, recsDataErr(err)
	}
	var tables [2]*recsys.Neighbors
	for _, side := range []recsys.Side{recsys.SideUsers, recsys.SideItems} {
		shards := make([]*recsys.Shard, 0, plan.Shards[side])
		for p := range plan.Shards[side] {
			sh, err := readShard(ctx, arts, recsShardKey(plan.Rebuild, side, p), st.Limits())
			if err != nil {
				return 0, 0, err
			}
			shards = append(shards, sh)
		}
		if tables[side], err = recsys.Merge(shards...); err != nil {
			return 0, 0, pipeline.Permanent(err)
		}
	}
	m, err := recsys.NewModel(st, RecsConfig(plan.Neighbors), tables[recsys.SideUsers], tables[recsys.SideItems])
	if err != nil {
		return 0, 0, pipeline.Permanent(err)
	}
	opts := RecsOptions(plan.Mode, plan.Top)
	all, err := m.All(opts)
	if err != nil {
		return 0, 0, pipeline.Permanent(err)
	}
	// The cold-start list goes with the generation, as in recs-rebuild.
	popular, err := m.Popular(opts)
	if err != nil {
		return 0, 0, pipeline.Permanent(err)
	}
	gen, users, err = recsys.NewRedisStore(rdb, recsys.RedisStoreOptions{}).Publish(ctx, recsys.WithPopular(all, popular))
	if errors.Is(err, recsys.ErrStaleGeneration) {
		return gen, users, pipeline.Permanent(err)
	}
	return gen, max(users-1, 0), err // users, without the popular list
}

// deleteRecsRebuildFiles removes what a rebuild left in the artifact store.
func deleteRecsRebuildFiles(ctx context.Context, logger *slog.Logger, arts artifact.Store, id string) {
	keys, err := arts.List(ctx, recsArtifactKey(id, ""))
	for _, k := range keys {
		if err == nil {
			err = arts.Delete(ctx, k)
		}
	}
	if err != nil {
		logger.Warn("recs rebuild files kept", "rebuild", id, "err", err)
	}
}

// errRecsAbandoned refuses a step of an abandoned rebuild.
func errRecsAbandoned(id string) error {
	return pipeline.Permanent(fmt.Errorf("rebuild %s was abandoned (see %s)", id, recsRebuildKey(id)))
}

// abandonRecsRebuild gives up on rebuild id after err when no retry will
// come: err is permanent, or the task ran its last attempt (a cancelled
// context, as at shutdown, puts the task back and is not final). Without it
// the rebuild would keep the lock for RecsRebuildLockTTL, holding off every
// rebuild until then, and its files would stay in the artifact store. It
// marks the rebuild abandoned with the reason (later steps of it then stop),
// deletes its files unless a base record holds its snapshot (its merge
// moved the base before failing), and releases the lock if id holds it. It
// returns err.
func abandonRecsRebuild(ctx context.Context, d *Deps, rdb redis.UniversalClient, arts artifact.Store, id string, retried, maxRetry int, err error) error {
	final := pipeline.IsPermanent(err) || err != nil && retried >= maxRetry && !errors.Is(err, context.Canceled)
	if !final {
		return err
	}
	// The task's own context may be what ended it (its timeout).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	logger := d.logger().With("rebuild", id)
	base, ok, berr := LoadRecsBase(ctx, rdb)
	if berr != nil {
		logger.Error("recs rebuild failed; its lock and files are kept, since the base record cannot be read", "err", err, "base_err", berr)
		return err
	}
	if ok && (base.Rebuild == id || base.Prev != nil && base.Prev.Rebuild == id) {
		logger.Error("recs rebuild failed after it became the base; its files are kept", "err", err)
	} else {
		_, merr := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, recsRebuildKey(id), "status", recsStatusAbandoned, "error", err.Error())
			p.Expire(ctx, recsRebuildKey(id), recsRecordTTL)
			return nil
		})
		if merr != nil {
			logger.Error("recs rebuild failed and cannot be marked abandoned; its files are kept", "err", err, "mark_err", merr)
		} else {
			deleteRecsRebuildFiles(ctx, logger, arts, id)
			logger.Error("recs rebuild abandoned; its files are deleted", "err", err)
		}
	}
	if lerr := releaseRecsLock(ctx, rdb, id); lerr != nil {
		logger.Warn("recs rebuild lock not released; it expires on its own", "err", lerr, "ttl", RecsRebuildLockTTL)
	}
	return err
}

// announce publishes recs.rebuilt on the EVENTS stream, when NATS is there.
func (w RecsMergeWorker) announce(ctx context.Context, base RecsBase) error {
	if w.Deps == nil || w.Deps.Bus == nil {
		return nil
	}
	ev := struct {
		Schema string    `json:"schema"`
		Type   string    `json:"type"`
		ID     string    `json:"id"`
		Time   time.Time `json:"time"`
		Data   RecsBase  `json:"data"`
	}{eventSchema, EventRecsRebuilt, "evt_recs_" + base.Rebuild + "_rebuilt", base.Time.Truncate(time.Second), base}
	return w.Deps.Bus.Publish(ctx, pipeline.EventSubject(EventRecsRebuilt), ev.ID, ev)
}

// releaseRecsLock drops the rebuild lock if id holds it.
var releaseRecsLockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func releaseRecsLock(ctx context.Context, rdb redis.UniversalClient, id string) error {
	if err := releaseRecsLockScript.Run(ctx, rdb, []string{KeyRecsRebuildLock}, id).Err(); err != nil {
		return fmt.Errorf("rebuild lock: %w", err)
	}
	return nil
}

// readShard reads one shard file; a damaged one is permanent.
func readShard(ctx context.Context, arts artifact.Store, key string, lim recsys.Limits) (*recsys.Shard, error) {
	rc, err := arts.Get(ctx, key)
	if err != nil {
		if errors.Is(err, artifact.ErrNotFound) {
			return nil, pipeline.Permanent(fmt.Errorf("shard %s: %w", key, err))
		}
		return nil, err
	}
	defer rc.Close()
	sh, err := recsys.ReadShard(rc, lim)
	if err != nil {
		return nil, pipeline.Permanent(fmt.Errorf("shard %s: %w", arts.Location(key), err))
	}
	return sh, nil
}

// putStreamed stores what write produces under key without holding it all
// in memory.
func putStreamed(ctx context.Context, arts artifact.Store, key string, write func(io.Writer) (int64, error)) error {
	pr, pw := io.Pipe()
	go func() {
		_, err := write(pw)
		pw.CloseWithError(err)
	}()
	err := arts.Put(ctx, key, pr)
	pr.CloseWithError(errors.New("store stopped reading"))
	return err
}

// recsDataErr classes a failure to load rebuild data.
func recsDataErr(err error) error {
	if permanentRecsErr(err) {
		return pipeline.Permanent(err)
	}
	return err
}

// enqueueOnce enqueues args under task id id, kept recsTaskRetention after
// it ends; an id already taken means it was enqueued before.
func enqueueOnce[T pipeline.JobArgs](ctx context.Context, rdb redis.UniversalClient, args T, id string) error {
	task, err := pipeline.NewTask(args, asynq.TaskID(id), asynq.Retention(recsTaskRetention))
	if err != nil {
		return err
	}
	_, err = asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, task)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue %s: %w", id, err)
	}
	return nil
}

// recsBackends returns the Redis client and artifact store of the sharded
// rebuild.
func recsBackends(d *Deps) (redis.UniversalClient, artifact.Store, error) {
	rdb, err := redisOf(d)
	if err != nil {
		return nil, nil, err
	}
	if d.Artifacts == nil {
		return nil, nil, errors.New("artifact store: this worker has none (Deps.Artifacts)")
	}
	return rdb, d.Artifacts, nil
}

// recsQueueOnly is why the kinds of the sharded rebuild have no `worker
// exec` of their own.
const recsQueueOnly = "as part of a sharded rebuild (enqueue " + KindRecsFanout + "); " +
	"to rebuild in one process use `worker exec " + KindRecsRebuild + "`"
