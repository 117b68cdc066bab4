package live

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ai/tandem/dataroot/dataroottest"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// setDataRoot confines deps to the directory of the environment's
// interaction file, as a worker's --data-root would.
func (e *feedbackEnv) setDataRoot(t testing.TB, deps *jobs.Deps) {
	t.Helper()
	dataroottest.Install(t, deps, filepath.Dir(e.interactions))
}

// startWorkers runs every job kind in-process on the default queue, as a
// worker process would, until the test ends.
func (e *feedbackEnv) startWorkers(t testing.TB) {
	t.Helper()
	deps := jobs.NewDeps(quiet)
	deps.Redis, deps.Artifacts, deps.Bus = e.rdb, e.arts, e.bus
	e.setDataRoot(t, deps)
	reg := pipeline.NewRegistry()
	jobs.RegisterAll(reg, deps)
	cfg := e.cfg
	cfg.Queues = map[string]int{pipeline.QueueDefault: 1}
	cfg.Concurrency, cfg.PollInterval = 4, 20*time.Millisecond
	srv, err := pipeline.NewServer(cfg, reg, quiet, pipeline.Recover(quiet))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(ctx); err != nil {
			t.Errorf("worker server: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// publishAll publishes events as a client would and waits until the live
// model has applied them.
func (e *feedbackEnv) publishAll(t *testing.T, c *feedbackConsumer, evs []recsys.Event) {
	t.Helper()
	ctx := context.Background()
	keys := make([]string, len(evs))
	for i, ev := range evs {
		body, _ := json.Marshal(ev)
		if _, err := publishBody(ctx, e.bus, body); err != nil {
			t.Fatal(err)
		}
		keys[i] = recsys.KeyLoggedPrefix + ev.ID
	}
	// By their dedupe markers: a merge may trim the log meanwhile.
	waitFor(t, "the events in the log", func() bool {
		n, err := e.rdb.Exists(ctx, keys...).Result()
		return err == nil && n == int64(len(keys))
	})
	c.caughtUp(t)
}

// waitIdle waits until a queue has no task waiting or running.
func waitIdle(t *testing.T, insp *asynq.Inspector, queue string) {
	t.Helper()
	waitFor(t, "queue "+queue+" to drain", func() bool {
		q, err := insp.GetQueueInfo(queue)
		return err == nil && q.Pending+q.Active+q.Scheduled+q.Retry == 0
	})
}

// waitBase waits for a base record made by a rebuild other than prev.
func (e *feedbackEnv) waitBase(t testing.TB, prev string) jobs.RecsBase {
	t.Helper()
	var b jobs.RecsBase
	patience := 30 * time.Second
	if _, ok := t.(*testing.B); ok {
		patience = 30 * time.Minute // a full-scale rebuild
	}
	waitForWithin(t, patience, "the rebuild's merge", func() bool {
		got, ok, err := jobs.LoadRecsBase(context.Background(), e.rdb)
		b = got
		return err == nil && ok && got.Rebuild != prev
	})
	return b
}

// waitReloaded waits until the live model runs on base b.
func waitReloaded(t *testing.T, c *feedbackConsumer, b jobs.RecsBase) {
	t.Helper()
	waitFor(t, "the live model to reload", func() bool {
		c.live.mu.Lock()
		defer c.live.mu.Unlock()
		return c.live.base.Rebuild == b.Rebuild
	})
	c.caughtUp(t)
}

// nightlyEntryName is the name of the scheduler's built-in nightly entry.
const nightlyEntryName = "recs-nightly"

// nightlyTicker returns what one scheduler replica does at a tick of its
// built-in nightly entry (02:00 UTC, 3 shards): it reports how many tasks
// it enqueued.
func (e *feedbackEnv) nightlyTicker(t *testing.T) func(at time.Time) int {
	t.Helper()
	payload, err := json.Marshal(jobs.RecsFanoutArgs{Interactions: e.interactions, Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	entries := []pipeline.PeriodicEntry{{Name: nightlyEntryName, Spec: "0 2 * * *", Kind: jobs.KindRecsFanout, Payload: payload}}
	client, err := pipeline.NewClient(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return func(at time.Time) int {
		t.Helper()
		p, err := pipeline.NewPeriodic(client, entries, quiet, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, err := p.Tick(context.Background(), at)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// referenceModel builds, in one process, a model from the interaction file
// followed by events, as a single-process rebuild of the same data would.
func referenceModel(t *testing.T, path string, events []recsys.Event, cfg recsys.Config) *recsys.Model {
	t.Helper()
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if err := st.Add(ev); err != nil {
			t.Fatal(err)
		}
	}
	m, err := recsys.Build(context.Background(), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sameModels checks two models give every user the same list and every
// user and item the same neighbours.
func sameModels(t *testing.T, what string, got, want *recsys.Model, users, items []string) {
	t.Helper()
	for _, u := range users {
		a, _ := got.Recommend(u, recsys.RecOptions{})
		b, _ := want.Recommend(u, recsys.RecOptions{})
		if !sameList(a, b) {
			t.Fatalf("%s: %s's list:\n got %v\nwant %v", what, u, a, b)
		}
		na, _ := got.Neighbors(recsys.SideUsers, u)
		nb, _ := want.Neighbors(recsys.SideUsers, u)
		if !slices.Equal(na, nb) {
			t.Fatalf("%s: %s's neighbours:\n got %v\nwant %v", what, u, na, nb)
		}
	}
	for _, i := range items {
		na, _ := got.Neighbors(recsys.SideItems, i)
		nb, _ := want.Neighbors(recsys.SideItems, i)
		if !slices.Equal(na, nb) {
			t.Fatalf("%s: item %s's neighbours:\n got %v\nwant %v", what, i, na, nb)
		}
	}
}

// TestNightlyShardedRebuild runs two nights end to end: the cron ticks on
// two scheduler replicas, the fan-out, shards and merge run on an asynq
// worker server, the served lists equal a single-process rebuild of the
// same interactions (the file and the feedback since), and the live model
// reloads without losing the events that arrived after the snapshot.
func TestNightlyShardedRebuild(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, stop, err := start(ctx, e.bus, e.options())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	e.startWorkers(t)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)

	// Feedback before the first night: new items, new users, known pairs.
	day1Events := []recsys.Event{
		{ID: "a1", User: "u1", Item: "fresh-1", Type: recsys.EventPurchase, Value: 1},
		{ID: "a2", User: "u2", Item: "i3", Type: recsys.EventClick, Value: 1},
		{ID: "a3", User: "newcomer", Item: "i3", Type: recsys.EventView, Value: 2},
		{ID: "a4", User: "u7", Item: "fresh-1", Type: recsys.EventAccepted, Value: 1, ItemKind: "template"},
		{ID: "a5", User: "u1", Item: "i5", Type: recsys.EventRejected, Value: 1},
	}
	e.publishAll(t, c, day1Events)
	waitIdle(t, insp, pipeline.QueueRecsLive)

	// Two scheduler replicas tick at 02:00: the rebuild is enqueued once.
	nightly := e.nightlyTicker(t)
	tick := func(at time.Time) {
		t.Helper()
		if total := nightly(at) + nightly(at); total != 1 {
			t.Fatalf("two replicas enqueued the nightly rebuild %d times, want 1", total)
		}
	}
	day1 := time.Date(2030, 1, 2, 2, 0, 0, 0, time.UTC)
	tick(day1)
	base1 := e.waitBase(t, "")
	if want := jobs.RecsRebuildID(pipeline.PeriodicTaskID(nightlyEntryName, day1)); base1.Rebuild != want {
		t.Fatalf("base made by rebuild %q, want %q", base1.Rebuild, want)
	}

	// The served generation is exactly a single-process rebuild of the file
	// and the day's feedback, for every user.
	ref := referenceModel(t, e.interactions, day1Events, jobs.RecsConfig(0))
	all, err := ref.All(recsys.RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	var want [][]recsys.Scored
	for u, l := range all {
		users, want = append(users, u), append(want, l)
	}
	got, err := e.store.GetAt(ctx, base1.Generation, users...)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range users {
		if !sameList(got[i], want[i]) {
			t.Fatalf("served list of %s after the sharded rebuild:\n got %v\nwant %v", u, got[i], want[i])
		}
	}
	if n, err := e.rdb.HLen(ctx, recsys.ServeGenKey(base1.Generation)).Result(); err != nil || n != int64(len(users))+1 { // plus the cold-start list
		t.Fatalf("generation %d holds %d lists (err %v), want %d (users and the popular list)", base1.Generation, n, err, len(users)+1)
	}
	if cur, err := e.store.Current(ctx); err != nil || cur != base1.Generation {
		t.Fatalf("serving generation %d (err %v), want %d", cur, err, base1.Generation)
	}
	// Three shard tasks, each computing a range of both sides, each counted once.
	if n, err := e.rdb.HLen(ctx, pipeline.Key("recs", "rebuild", base1.Rebuild, "done")).Result(); err != nil || n != 3 {
		t.Fatalf("done-set holds %d shards (err %v), want 3", n, err)
	}
	waitReloaded(t, c, base1)

	// The second night. Events that arrive after its snapshot was taken are
	// applied to the old live model, then replayed onto the reloaded one.
	day2 := day1.Add(24 * time.Hour)
	tick(day2)
	id2 := jobs.RecsRebuildID(pipeline.PeriodicTaskID(nightlyEntryName, day2))
	waitFor(t, "the second rebuild's plan", func() bool {
		n, err := e.rdb.Exists(ctx, pipeline.Key("recs", "rebuild", id2)).Result()
		return err == nil && n == 1
	})
	day2Events := []recsys.Event{
		{ID: "b1", User: "u3", Item: "fresh-1", Type: recsys.EventPurchase, Value: 1},
		{ID: "b2", User: "late", Item: "fresh-2", Type: recsys.EventClick, Value: 1},
		{ID: "b3", User: "u1", Item: "i9", Type: recsys.EventView, Value: 3},
	}
	e.publishAll(t, c, day2Events)
	base2 := e.waitBase(t, base1.Rebuild)
	if base2.Rebuild != id2 || base2.Prev == nil || base2.Prev.Rebuild != base1.Rebuild {
		t.Fatalf("second base %+v, want rebuild %s after %s", base2, id2, base1.Rebuild)
	}
	waitReloaded(t, c, base2)
	live, _ := c.live.model()
	ref2 := referenceModel(t, e.interactions, day1Events, jobs.RecsLiveConfig(0))
	for _, ev := range day2Events {
		if _, err := ref2.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	items := []string{"fresh-1", "fresh-2", "i3", "i5", "i9"}
	sameModels(t, "live model after the reload", live, ref2, append(users, "late"), items)
	// The users of the replayed events are served from the live model, not
	// from the rebuild that did not have their events.
	for _, ev := range day2Events {
		want, _ := live.Recommend(ev.User, recsys.RecOptions{})
		waitFor(t, ev.User+"'s refreshed list", func() bool {
			l, ok, err := e.store.Get(ctx, ev.User)
			return err == nil && ok && sameList(l, want)
		})
	}
	// The log keeps what the previous snapshot lacks: its last entry and
	// the second day's events.
	if n, err := c.log.Len(ctx); err != nil || n != int64(1+len(day2Events)) {
		t.Fatalf("log holds %d entries after the second merge (err %v), want %d", n, err, 1+len(day2Events))
	}
	// A scheduler that restarts after the current snapshot was lost starts
	// from the previous one and the log after it: the same events.
	if err := e.arts.Delete(ctx, base2.Snapshot); err != nil {
		t.Fatal(err)
	}
	c2, stop2, err := start(ctx, e.bus, e.options())
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	c2.caughtUp(t)
	restarted, _ := c2.live.model()
	sameModels(t, "live model restarted on the previous snapshot", restarted, ref2, append(users, "late"), items)

	// Each merge announced itself on tandem.events.recs.rebuilt.
	cons, err := e.bus.JS.OrderedConsumer(ctx, pipeline.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{pipeline.EventSubject(jobs.EventRecsRebuilt)},
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var announced []string
	for m := range batch.Messages() {
		var ev struct {
			Type string        `json:"type"`
			Data jobs.RecsBase `json:"data"`
		}
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		announced = append(announced, ev.Type+" "+ev.Data.Rebuild)
	}
	if w := []string{"recs.rebuilt " + base1.Rebuild, "recs.rebuilt " + base2.Rebuild}; !slices.Equal(announced, w) {
		t.Fatalf("announced %v, want %v", announced, w)
	}
}

// TestShardedRebuildRetries runs the handlers directly, twice where a
// crash would make asynq run them twice: nothing counts or merges twice.
func TestShardedRebuildRetries(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx := context.Background()
	deps := &jobs.Deps{Logger: quiet, Redis: e.rdb, Artifacts: e.arts}
	e.setDataRoot(t, deps)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	const id = "retry-test"
	fan := func(taskID string) error {
		return jobs.RecsFanoutWorker{Deps: deps}.Work(ctx, &pipeline.Job[jobs.RecsFanoutArgs]{ID: taskID,
			Args: jobs.RecsFanoutArgs{Interactions: e.interactions, Shards: 3}})
	}
	shard := func(p int) error {
		return jobs.RecsShardWorker{Deps: deps}.Work(ctx, &pipeline.Job[jobs.RecsShardArgs]{ID: "shard",
			Args: jobs.RecsShardArgs{Rebuild: id, Shard: p}})
	}
	merge := func() error {
		return jobs.RecsMergeWorker{Deps: deps}.Work(ctx, &pipeline.Job[jobs.RecsMergeArgs]{ID: id + ":merge",
			Args: jobs.RecsMergeArgs{Rebuild: id}})
	}
	doneSet := func() int64 {
		n, err := e.rdb.HLen(ctx, pipeline.Key("recs", "rebuild", id, "done")).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	mergeQueued := func() bool {
		_, err := insp.GetTaskInfo(pipeline.QueueDefault, id+":merge")
		return err == nil
	}
	for range 2 { // a retried fan-out re-enqueues the same shard tasks
		if err := fan(id); err != nil {
			t.Fatal(err)
		}
	}
	if q, err := insp.GetQueueInfo(pipeline.QueueDefault); err != nil || q.Pending != 3 {
		t.Fatalf("pending shard tasks: %+v, %v; want 3", q, err)
	}
	// A second rebuild waits for this one to finish.
	if err := fan("other"); !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), id) {
		t.Fatalf("a second rebuild while %s runs: %v, want a permanent error naming it", id, err)
	}
	for range 2 {
		if err := shard(0); err != nil {
			t.Fatal(err)
		}
	}
	if n := doneSet(); n != 1 {
		t.Fatalf("a shard run twice counted %d times", n)
	}
	if err := shard(1); err != nil {
		t.Fatal(err)
	}
	if mergeQueued() {
		t.Fatal("merge enqueued before the last shard")
	}
	for range 2 {
		if err := shard(2); err != nil {
			t.Fatal(err)
		}
	}
	if n := doneSet(); n != 3 || !mergeQueued() {
		t.Fatalf("after every shard: %d counted, merge queued %v; want 3 and true", n, mergeQueued())
	}
	if err := merge(); err != nil {
		t.Fatal(err)
	}
	base, ok, err := jobs.LoadRecsBase(ctx, e.rdb)
	if err != nil || !ok || base.Rebuild != id {
		t.Fatalf("base after the merge: %+v %v %v", base, ok, err)
	}
	// Late re-runs of the merge and of a shard change nothing, and neither
	// does a merge that crashed after moving the base (status not yet
	// written): it must not publish the lists again over live updates.
	if err := merge(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HSet(ctx, pipeline.Key("recs", "rebuild", id), "status", "planned").Err(); err != nil {
		t.Fatal(err)
	}
	if err := merge(); err != nil {
		t.Fatal(err)
	}
	if again, _, err := jobs.LoadRecsBase(ctx, e.rdb); err != nil || again.Generation != base.Generation || again.Prev != nil {
		t.Fatalf("base after a re-run merge: %+v, %v; want %+v", again, err, base)
	}
	if err := shard(0); err != nil {
		t.Fatal(err)
	}
	if cur, err := e.store.Current(ctx); err != nil || cur != base.Generation {
		t.Fatalf("serving generation %d after re-runs (err %v), want %d", cur, err, base.Generation)
	}
	// The shard files are gone; the snapshot, now the base, stays.
	keys, err := e.arts.List(ctx, "recs/rebuilds/"+id+"/")
	if err != nil || !slices.Equal(keys, []string{base.Snapshot}) {
		t.Fatalf("artifacts after the merge: %v, %v; want only %s", keys, err, base.Snapshot)
	}
	// The lock is free again.
	if err := fan("next"); err != nil {
		t.Fatalf("the rebuild after a merged one: %v", err)
	}
}

// TestFailedRebuildReleasesItsLockAndFiles fails a rebuild's steps for
// good, a shard on its last attempt and a merge refused as stale: each time
// the rebuild is marked abandoned, its files are deleted and the lock is
// free for the next rebuild at once, not after its 6 h TTL.
func TestFailedRebuildReleasesItsLockAndFiles(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx := context.Background()
	deps := &jobs.Deps{Logger: quiet, Redis: e.rdb, Artifacts: e.arts}
	e.setDataRoot(t, deps)
	fan := func(id string) {
		t.Helper()
		if err := (jobs.RecsFanoutWorker{Deps: deps}).Work(ctx, &pipeline.Job[jobs.RecsFanoutArgs]{ID: id, MaxRetry: 5,
			Args: jobs.RecsFanoutArgs{Interactions: e.interactions, Shards: 2}}); err != nil {
			t.Fatalf("fan-out of %s: %v", id, err)
		}
	}
	shard := func(id string, p, retried int) error {
		return jobs.RecsShardWorker{Deps: deps}.Work(ctx, &pipeline.Job[jobs.RecsShardArgs]{ID: id + ":" + strconv.Itoa(p), Retried: retried, MaxRetry: 5,
			Args: jobs.RecsShardArgs{Rebuild: id, Shard: p}})
	}
	merge := func(id string) error {
		return jobs.RecsMergeWorker{Deps: deps}.Work(ctx, &pipeline.Job[jobs.RecsMergeArgs]{ID: id + ":merge", MaxRetry: 10,
			Args: jobs.RecsMergeArgs{Rebuild: id}})
	}
	files := func(id string) []string {
		t.Helper()
		keys, err := e.arts.List(ctx, "recs/rebuilds/"+id+"/")
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	abandoned := func(id string) {
		t.Helper()
		if n, err := e.rdb.Exists(ctx, jobs.KeyRecsRebuildLock).Result(); err != nil || n != 0 {
			t.Fatalf("%s: lock still held (%v)", id, err)
		}
		if keys := files(id); len(keys) != 0 {
			t.Fatalf("%s: files left: %v", id, keys)
		}
		if st, err := e.rdb.HGet(ctx, pipeline.Key("recs", "rebuild", id), "status").Result(); err != nil || st != "abandoned" {
			t.Fatalf("%s: status %q (%v), want abandoned", id, st, err)
		}
	}

	// A shard whose snapshot is gone: retried while attempts remain, the
	// rebuild given up on its last one.
	const lost = "lost-snapshot"
	fan(lost)
	if err := shard(lost, 0, 0); err != nil {
		t.Fatal(err)
	}
	if keys := files(lost); len(keys) < 2 {
		t.Fatalf("files after a shard: %v, want the snapshot and shard files", keys)
	}
	if err := e.arts.Delete(ctx, "recs/rebuilds/"+lost+"/snapshot.csv"); err != nil {
		t.Fatal(err)
	}
	if err := shard(lost, 1, 0); err == nil {
		t.Fatal("a shard without its snapshot succeeded")
	}
	if holder, err := e.rdb.Get(ctx, jobs.KeyRecsRebuildLock).Result(); err != nil || holder != lost {
		t.Fatalf("after a failure with retries left the lock is %q (%v), want %s's", holder, err, lost)
	}
	if err := shard(lost, 1, 5); err == nil {
		t.Fatal("the last attempt succeeded")
	}
	abandoned(lost)
	// The other steps of an abandoned rebuild stop.
	if err := shard(lost, 0, 0); !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("a shard of an abandoned rebuild: %v", err)
	}

	// A merge refused as stale: a rebuild reaching further into the log
	// made the base meanwhile.
	const stale = "stale-merge"
	fan(stale) // the lock was free
	for p := range 2 {
		if err := shard(stale, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	later, _ := json.Marshal(jobs.RecsBase{Rebuild: "later", Snapshot: "recs/rebuilds/later/snapshot.csv", LogID: "99999999999999-0"})
	if err := e.rdb.Set(ctx, jobs.KeyRecsBase, later, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := merge(stale); !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "later") {
		t.Fatalf("stale merge: %v, want a permanent error naming the later rebuild", err)
	}
	abandoned(stale)
}

// TestUpdateTasksCoalesce checks one update task per user per window, and
// that an event arriving after its window's task has read the log gets a
// task of the next window rather than being lost.
func TestUpdateTasksCoalesce(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	u := &updateEnqueuer{client: asynq.NewClientFromRedisClient(e.rdb), insp: insp, rdb: e.rdb, window: time.Second, now: func() time.Time { return now }}
	for _, user := range []string{"u1", "u1", "u2", "u1"} {
		if err := u.enqueue(ctx, user); err != nil {
			t.Fatal(err)
		}
	}
	w := now.UnixNano() / int64(time.Second)
	pending, err := insp.ListPendingTasks(pipeline.QueueRecsLive)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range pending {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	wantIDs := []string{"recs-user:" + itoa(w) + ":u1", "recs-user:" + itoa(w) + ":u2"}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("pending update tasks %v, want %v", ids, wantIDs)
	}

	// Run the tasks on a server whose handler holds them until released:
	// u1's after marking that it reads the log, u2's still in its window.
	started, release := make(chan string, 4), make(chan struct{})
	reg := pipeline.NewRegistry()
	pipeline.Register[jobs.RecsUserUpdateArgs](reg, pipeline.WorkFunc[jobs.RecsUserUpdateArgs](
		func(ctx context.Context, job *pipeline.Job[jobs.RecsUserUpdateArgs]) error {
			if job.Args.User == "u1" {
				if err := markReading(job.ResultWriter); err != nil {
					return err
				}
			}
			started <- job.ID
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}), pipeline.KindOptions{})
	cfg := e.cfg
	cfg.Queues = map[string]int{pipeline.QueueRecsLive: 1}
	cfg.Concurrency, cfg.PollInterval = 4, 10*time.Millisecond
	srv, err := pipeline.NewServer(cfg, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Run(sctx)
	}()
	defer func() {
		scancel()
		<-done
	}()
	running := map[string]bool{}
	for len(running) < 2 {
		select {
		case id := <-started:
			running[id] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("update tasks did not start; running %v", running)
		}
	}
	// u2's task runs but has not read the log: a new event of u2 joins it.
	// u1's task may have read the log before a new event of u1, which goes
	// to the next window's task.
	for _, user := range []string{"u1", "u2", "u2"} {
		if err := u.enqueue(ctx, user); err != nil {
			t.Fatal(err)
		}
	}
	for user, want := range map[string]bool{"u1": true, "u2": false} {
		next := "recs-user:" + itoa(w+1) + ":" + user
		if _, err := insp.GetTaskInfo(pipeline.QueueRecsLive, next); (err == nil) != want {
			t.Errorf("task %s exists: %v, want %v", next, err == nil, want)
		}
	}
	close(release)
	waitIdle(t, insp, pipeline.QueueRecsLive)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestUpdateTaskBudget: the longest window accepted leaves an update task
// its catch-up wait and its work within the task's timeout.
func TestUpdateTaskBudget(t *testing.T) {
	if budget := maxWindowBumps*MaxWindow + catchUpTimeout + updateWorkMargin; budget > jobs.RecsUserUpdateTimeout {
		t.Fatalf("an update task may need %v, over its %v timeout", budget, jobs.RecsUserUpdateTimeout)
	}
}

// TestFeedbackBurstCoalesces sends a burst of one user's events through
// the whole path: they share one or two update tasks (two when the burst
// straddles a window's end), not one each, and the list reflects all.
func TestFeedbackBurstCoalesces(t *testing.T) {
	e := newFeedbackEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ref := e.publishRebuild(t)
	o := e.options()
	o.Window = 2 * time.Second
	c, stop, err := start(ctx, e.bus, o)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var burst []recsys.Event
	for i := range 10 {
		burst = append(burst, recsys.Event{ID: "burst-" + strconv.Itoa(i), User: "u2", Item: recsys.SynthItem(i), Type: recsys.EventClick, Value: 1})
	}
	e.publishAll(t, c, burst)
	// The consumer acks a message once its update task is enqueued.
	waitFor(t, "the consumer to ack every message", func() bool {
		cons, err := e.bus.JS.Consumer(ctx, pipeline.StreamFeedback, FeedbackDurable)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	waitIdle(t, insp, pipeline.QueueRecsLive)
	q, err := insp.GetQueueInfo(pipeline.QueueRecsLive)
	if err != nil {
		t.Fatal(err)
	}
	if q.Processed < 1 || q.Processed > 2 {
		t.Fatalf("%d update tasks ran for a burst of %d events of one user, want 1 or 2", q.Processed, len(burst))
	}
	for _, ev := range burst {
		if _, err := ref.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := ref.Recommend("u2", recsys.RecOptions{})
	got, _, err := e.store.Get(ctx, "u2")
	if err != nil || !sameList(got, want) {
		t.Fatalf("u2 after the burst:\n got %v (err %v)\nwant %v", got, err, want)
	}
}
