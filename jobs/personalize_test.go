package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/dataroot/dataroottest"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/recsys"
)

// personalizeTestDB is this test package's own Redis database.
const personalizeTestDB = 4

func personalizeRedis(t *testing.T) *redis.Client {
	t.Helper()
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: personalizeTestDB})
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s (DB %d) is needed: %v", addr, personalizeTestDB, err)
	}
	t.Cleanup(func() {
		rdb.FlushDB(context.Background())
		rdb.Close()
	})
	return rdb
}

const testCatalog = `{"id":"tpl-a","kind":"template","template":"Write a haiku about {{.topic}} for {{.user}}:","vars":{"topic":"rain"}}
{"id":"tpl-b","kind":"template","template":"Describe {{.topic}} in one line:"}

{"id":"tpl-c","kind":"template","template":"{{.missing}}"}
{"id":"top-x","kind":"topic","topic":"a city marathon"}
{"id":"top-y","kind":"topic","topic":"autumn leaves"}
`

type personalizeEnv struct {
	rdb          *redis.Client
	dir, catalog string
	deps         *jobs.Deps
	serving      *recsys.RedisStore
	gens         *loop.Store
}

func newPersonalizeEnv(t *testing.T) *personalizeEnv {
	t.Helper()
	e := &personalizeEnv{rdb: personalizeRedis(t), dir: t.TempDir()}
	e.catalog = filepath.Join(e.dir, "catalog.jsonl")
	if err := os.WriteFile(e.catalog, []byte(testCatalog), 0o644); err != nil {
		t.Fatal(err)
	}
	e.deps = jobs.NewDeps(nil)
	e.deps.Redis, e.deps.PromptTemplates = e.rdb, batch.PromptTemplates
	dataroottest.Install(t, e.deps, e.dir) // the catalog, users files and outputs live here
	e.serving = recsys.NewRedisStore(e.rdb, recsys.RedisStoreOptions{})
	e.gens = loop.NewStore(e.rdb, loop.StoreOptions{})
	return e
}

// serve publishes lists (and a popular list) as a rebuild would.
func (e *personalizeEnv) serve(t *testing.T, lists map[string][]string, popular []string) {
	t.Helper()
	scored := func(items []string) []recsys.Scored {
		out := make([]recsys.Scored, len(items))
		for i, it := range items {
			out[i] = recsys.Scored{Item: it, Score: float64(len(items) - i)}
		}
		return out
	}
	all := func(yield func(string, []recsys.Scored) bool) {
		for u, l := range lists {
			if !yield(u, scored(l)) {
				return
			}
		}
	}
	if _, _, err := e.serving.Publish(context.Background(), recsys.WithPopular(all, scored(popular))); err != nil {
		t.Fatal(err)
	}
}

func (e *personalizeEnv) run(t *testing.T, args ...string) jobs.PersonalizeResult {
	t.Helper()
	var out bytes.Buffer
	base := []string{"--catalog", e.catalog, "--out", filepath.Join(e.dir, "out"), "--per-user", "2", "--max-tokens", "4", "--run", "run-1"}
	if err := jobs.Exec(context.Background(), e.deps, jobs.KindPersonalize, append(base, args...), &out); err != nil {
		t.Fatal(err)
	}
	var res jobs.PersonalizeResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	return res
}

func (e *personalizeEnv) summary(t *testing.T) map[string]jobs.PersonalizeUser {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "out", "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s jobs.PersonalizeSummary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	m := map[string]jobs.PersonalizeUser{}
	for _, u := range s.Users {
		m[u.User] = u
	}
	return m
}

// outputLines reads a user's output file.
func (e *personalizeEnv) outputLines(t *testing.T, u jobs.PersonalizeUser) []generation.ResponseLine {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "out", u.File))
	if err != nil {
		t.Fatal(err)
	}
	var lines []generation.ResponseLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r generation.ResponseLine
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, r)
	}
	return lines
}

func TestPersonalizeUsesEachUsersRecommendations(t *testing.T) {
	e := newPersonalizeEnv(t)
	ctx := context.Background()
	e.serve(t, map[string][]string{
		"alice": {"i-not-in-catalog", "tpl-b", "top-y", "tpl-a"},
		"bob":   {"top-x", "tpl-c", "tpl-a"},
	}, []string{"tpl-a", "top-x", "tpl-b"})
	users := filepath.Join(e.dir, "users.txt")
	lines := "alice\n# the reviewers\n\nbob\ncarol\nbad\x01user\nalice\n" + strings.Repeat("z", 400) + "\n"
	if err := os.WriteFile(users, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	res := e.run(t, "--users", users)

	// Bad lines are reported by number; the users around them are kept.
	var bad []string
	for _, le := range res.Errors {
		bad = append(bad, fmt.Sprintf("%d:%s", le.Line, le.Code))
	}
	if !slices.Equal(bad, []string{"6:invalid_user", "7:duplicate_user", "8:invalid_user"}) || res.BadLines != 3 {
		t.Fatalf("bad lines %v (%d)", bad, res.BadLines)
	}
	if res.Users != 3 || res.Recommended != 2 || res.Popular != 1 || res.Generations != 5 || res.Failed != 1 {
		t.Fatalf("result %+v", res)
	}
	sum := e.summary(t)
	want := map[string]struct {
		source  string
		items   []string
		prompts []string
	}{
		// alice's first two catalog items; her first topic fills the template.
		"alice": {jobs.SourceRecommended, []string{"tpl-b", "top-y"}, []string{"Describe autumn leaves in one line:", "Write a short piece about autumn leaves.\n"}},
		// bob's tpl-c cannot be filled: an error line, not a lost user.
		"bob": {jobs.SourceRecommended, []string{"top-x", "tpl-c"}, []string{"Write a short piece about a city marathon.\n"}},
		// carol has no list: the popular templates and topics.
		"carol": {jobs.SourcePopular, []string{"tpl-a", "top-x"}, []string{"Write a haiku about a city marathon for carol:", "Write a short piece about a city marathon.\n"}},
	}
	for user, w := range want {
		u := sum[user]
		if u.Source != w.source || !slices.Equal(u.Items, w.items) || len(u.Generations) != len(w.prompts) {
			t.Errorf("%s: %+v, want source %s items %v", user, u, w.source, w.items)
			continue
		}
		out := e.outputLines(t, u)
		if len(out) != len(w.items) {
			t.Fatalf("%s: %d output lines, want %d", user, len(out), len(w.items))
		}
		for i, id := range u.Generations {
			g, err := e.gens.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if g.User != user || g.Prompt != w.prompts[i] || g.Source != "personalize" || g.Model != "builtin:tiny" || g.Text == "" {
				t.Errorf("%s: generation %s = %+v, want prompt %q", user, id, g, w.prompts[i])
			}
			if out[i].Response == nil || out[i].Response.Body.ID != id || out[i].CustomID != w.items[i] || out[i].Response.Body.Choices[0].Text != g.Text {
				t.Errorf("%s: output line %d = %+v, want generation %s", user, i, out[i], id)
			}
		}
	}
	if g, _ := e.gens.Get(ctx, sum["alice"].Generations[0]); g.Template != "tpl-b" || g.Topic != "top-y" {
		t.Errorf("alice's template generation records template %q topic %q", g.Template, g.Topic)
	}
	if g, _ := e.gens.Get(ctx, sum["carol"].Generations[1]); g.Template != "" || g.Topic != "top-x" {
		t.Errorf("carol's topic generation records template %q topic %q", g.Template, g.Topic)
	}
	if out := e.outputLines(t, sum["bob"]); out[1].Error == nil || out[1].Error.Code != "template_error" || out[1].Error.Line != 4 || !strings.Contains(out[1].Error.Message, "missing") {
		t.Errorf("bob's unfillable template: %+v", out[1].Error)
	}

	// The same run again writes the same generations (a retried job).
	first := sum["alice"].Generations
	g1, _ := e.gens.Get(ctx, first[0])
	e.run(t, "--users", users)
	again := e.summary(t)["alice"].Generations
	g2, _ := e.gens.Get(ctx, again[0])
	if !slices.Equal(first, again) || g1.Text != g2.Text {
		t.Fatalf("a rerun of the run wrote %v (%q), first %v (%q)", again, g2.Text, first, g1.Text)
	}

	// Without a users file: every user with a served list.
	res = e.run(t, "--run", "run-2")
	if res.Users != 2 || res.Recommended != 2 || res.BadLines != 0 {
		t.Fatalf("all users: %+v", res)
	}
}

func TestPersonalizeColdStart(t *testing.T) {
	e := newPersonalizeEnv(t)
	users := filepath.Join(e.dir, "users.txt")
	if err := os.WriteFile(users, []byte("dave\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Nothing served yet: the catalog's first items.
	res := e.run(t, "--users", users)
	if u := e.summary(t)["dave"]; res.Catalog != 1 || u.Source != jobs.SourceCatalog || !slices.Equal(u.Items, []string{"tpl-a", "tpl-b"}) {
		t.Fatalf("no lists at all: %+v %+v", res, u)
	}
	// With a rebuild served, dave (not in it) gets the popular items.
	e.serve(t, map[string][]string{"erin": {"tpl-c"}}, []string{"top-y", "tpl-b", "tpl-a"})
	res = e.run(t, "--users", users, "--run", "run-3")
	u := e.summary(t)["dave"]
	if res.Popular != 1 || u.Source != jobs.SourcePopular || !slices.Equal(u.Items, []string{"top-y", "tpl-b"}) {
		t.Fatalf("cold start: %+v %+v", res, u)
	}
	g, err := e.gens.Get(context.Background(), u.Generations[1])
	if err != nil || g.Prompt != "Describe autumn leaves in one line:" {
		t.Fatalf("popular template filled with the popular topic: %+v %v", g, err)
	}
}

func TestPersonalizeRefusesBadCatalog(t *testing.T) {
	e := newPersonalizeEnv(t)
	for body, want := range map[string]string{
		`{"id":"t","kind":"template","template":"{{.x"}`:                                         "line 1",
		"\n" + `{"id":"t","kind":"poem"}`:                                                        `line 2: field "kind"`,
		`{"id":"t","kind":"topic"}`:                                                              `"topic"`,
		`{"id":"t","kind":"topic","topic":"x","extra":1}`:                                        "extra",
		`{"id":"t","kind":"topic","topic":"x"}` + "\n" + `{"id":"t","kind":"topic","topic":"y"}`: "twice",
		``: "no entries",
	} {
		if err := os.WriteFile(e.catalog, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err := jobs.Exec(context.Background(), e.deps, jobs.KindPersonalize, []string{"--catalog", e.catalog, "--out", e.dir, "--run", "r"}, &out)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("catalog %q: %v, want an error naming %s", body, err, want)
		}
	}
	if err := os.WriteFile(e.catalog, []byte(testCatalog), 0o644); err != nil {
		t.Fatal(err)
	}
	for args, want := range map[string]string{"--per-user=21": "per_user", "--max-tokens=-1": "max_tokens", "--model=builtin:nope": "builtin:nope"} {
		var out bytes.Buffer
		err := jobs.Exec(context.Background(), e.deps, jobs.KindPersonalize, []string{"--catalog", e.catalog, "--out", e.dir, args}, &out)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %s", args, err, want)
		}
	}
}

// swapOnFirstRecord is a go-redis hook on the worker's client: when the run
// saves its first generation record (its first group is done), it runs
// swap once, before the save goes to Redis.
type swapOnFirstRecord struct {
	once sync.Once
	swap func()
}

func (h *swapOnFirstRecord) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *swapOnFirstRecord) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h *swapOnFirstRecord) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if args := c.Args(); c.Name() == "set" && len(args) > 1 {
				if key, _ := args[1].(string); strings.HasPrefix(key, loop.RecordKey("")) {
					h.once.Do(h.swap)
				}
			}
		}
		return next(ctx, cmds)
	}
}

// TestPersonalizeFollowsARebuildThatSwapsMidRun swaps in a new generation
// after the run's first group of users and deletes the old one, as its
// Grace running out would: the later groups must read the new generation,
// not fall back to the popular list.
func TestPersonalizeFollowsARebuildThatSwapsMidRun(t *testing.T) {
	e := newPersonalizeEnv(t)
	const n = 40 // more than one group of users
	var names []string
	before, after := map[string][]string{}, map[string][]string{}
	for i := range n {
		u := fmt.Sprintf("u%02d", i)
		names = append(names, u)
		before[u], after[u] = []string{"tpl-b", "top-y"}, []string{"top-x", "tpl-a"}
	}
	e.serve(t, before, []string{"tpl-a", "top-x"})
	old, err := e.serving.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(e.dir, "users.txt")
	if err := os.WriteFile(users, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	worker := redis.NewClient(e.rdb.Options())
	t.Cleanup(func() { worker.Close() })
	swapped := false
	worker.AddHook(&swapOnFirstRecord{swap: func() {
		e.serve(t, after, []string{"tpl-b"})
		if err := e.rdb.Del(context.Background(), recsys.ServeGenKey(old)).Err(); err != nil {
			t.Error(err)
		}
		swapped = true
	}})
	e.deps.Redis = worker
	res := e.run(t, "--users", users)
	if !swapped {
		t.Fatal("the run saved no record: nothing swapped")
	}
	if res.Users != n || res.Recommended != n || res.Popular != 0 {
		t.Fatalf("result %+v: want every user served a recommended list", res)
	}
	sum := e.summary(t)
	var fromOld, fromNew int
	for _, u := range names {
		switch items := sum[u].Items; {
		case slices.Equal(items, before[u]):
			fromOld++
		case slices.Equal(items, after[u]):
			fromNew++
		default:
			t.Fatalf("%s got %v, from neither generation", u, items)
		}
	}
	if fromOld == 0 || fromNew == 0 {
		t.Fatalf("%d users read the old generation, %d the new one; want both (the swap came between groups)", fromOld, fromNew)
	}
}
