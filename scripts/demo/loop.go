package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/recsys"
	"github.com/tandem-ai/tandem/tokenstream"
)

// demoTemplates and demoTopics give the synthetic items (even: template,
// odd: topic; see writeDemoInteractions) their text.
var (
	demoTemplates = []string{
		"Write a product blurb about {{.topic}}:",
		"Write a haiku about {{.topic}}:",
		"Write a headline about {{.topic}}:",
		"Write a short reply to a customer about {{.topic}}:",
		"Write a tweet about {{.topic}} for {{.user}}:",
	}
	demoTopics = []string{"a rain jacket", "a late parcel", "a city marathon", "autumn", "a bakery opening", "a football match", "a night train"}
)

// demoItems is the number of items of the synthetic interactions.
const demoItems = 100

// demoCatalogEntry is the catalog line of item i.
func demoCatalogEntry(i int) jobs.CatalogEntry {
	if i%2 == 1 {
		return jobs.CatalogEntry{ID: fmt.Sprintf("i%d", i), Kind: jobs.ItemKindTopic, Topic: demoTopics[(i/2)%len(demoTopics)]}
	}
	return jobs.CatalogEntry{ID: fmt.Sprintf("i%d", i), Kind: jobs.ItemKindTemplate, Template: demoTemplates[(i/2)%len(demoTemplates)], Vars: map[string]string{"topic": "our shop"}}
}

// writeDemoCatalog writes the catalog that names the demo's items.
func writeDemoCatalog(path string) error {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for i := range demoItems {
		if err := enc.Encode(demoCatalogEntry(i)); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// personalize runs `producer personalize --wait` and reads its summary.
func (d *demo) personalize(ctx context.Context, users, out, catalog string) (jobs.PersonalizeResult, map[string]jobs.PersonalizeUser, error) {
	var res jobs.PersonalizeResult
	raw, err := d.output(ctx, "producer", "personalize", "--users", users, "--catalog", catalog, "--out", out,
		"--per-user", "2", "--max-tokens", "12", "--seed", "7", "--wait")
	if err != nil {
		return res, nil, err
	}
	var view struct{ Result jobs.PersonalizeResult }
	if err := json.Unmarshal([]byte(raw), &view); err != nil {
		return res, nil, fmt.Errorf("producer personalize: %w", err)
	}
	res = view.Result
	b, err := os.ReadFile(res.Summary)
	if err != nil {
		return res, nil, err
	}
	var sum jobs.PersonalizeSummary
	if err := json.Unmarshal(b, &sum); err != nil {
		return res, nil, err
	}
	byUser := map[string]jobs.PersonalizeUser{}
	for _, u := range sum.Users {
		byUser[u.User] = u
		fmt.Printf("   %-9s %-11s items %-10s -> %s\n", u.User, u.Source, strings.Join(u.Items, ","), filepath.Join(res.Out, u.File))
	}
	for _, e := range res.Errors {
		fmt.Printf("   users line %d skipped: %s: %s\n", e.Line, e.Code, e.Message)
	}
	return res, byUser, nil
}

// demoLoop closes the loop without interactive generation: a personalised
// batch from each user's recommendations (popular ones for a newcomer),
// feedback on two of u1's generations, u1's list moving, a second batch
// for u1 following the new list, and the loop metrics and dashboard on
// `producer serve`.
func demoLoop(ctx context.Context, d *demo) error {
	step("the human-AI loop: personalised batch -> feedback -> recommender -> personalised batch")
	catalog := filepath.Join(d.files, "catalog.jsonl")
	if err := writeDemoCatalog(catalog); err != nil {
		return err
	}
	users := filepath.Join(d.files, "loop-users.txt")
	if err := os.WriteFile(users, []byte("u1\nu7\n# a person with no history:\nnewcomer\nu1\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("   catalog %s (even items are templates, odd ones topics), users %s\n", catalog, users)
	_, first, err := d.personalize(ctx, users, filepath.Join(d.files, "personalize-1"), catalog)
	if err != nil {
		return err
	}
	u1 := first["u1"]
	if len(u1.Generations) < 2 {
		return fmt.Errorf("u1 got %d generations, want 2", len(u1.Generations))
	}
	before, err := d.recs(ctx, "u1")
	if err != nil {
		return err
	}
	fmt.Printf("   u1's list: %s\n", itemList(before.Items))
	for i, action := range []string{feedback.ActionAccept, feedback.ActionReject} {
		out, err := d.output(ctx, "producer", "feedback", "--generation", u1.Generations[i], "--action", action)
		if err != nil {
			return err
		}
		var v struct{ ID, Event, Item string }
		_ = json.Unmarshal([]byte(out), &v)
		fmt.Printf("   producer feedback --generation %s --action %s -> %s of %s (event %s)\n", u1.Generations[i], action, v.Event, v.Item, v.ID)
	}
	after, err := d.recsWithout(ctx, "u1", u1.Items)
	if err != nil {
		return err
	}
	fmt.Printf("   u1's list after the feedback: %s\n", itemList(after.Items))
	only := filepath.Join(d.files, "loop-u1.txt")
	if err := os.WriteFile(only, []byte("u1\n"), 0o644); err != nil {
		return err
	}
	_, second, err := d.personalize(ctx, only, filepath.Join(d.files, "personalize-2"), catalog)
	if err != nil {
		return err
	}
	if strings.Join(second["u1"].Items, ",") == strings.Join(u1.Items, ",") {
		return fmt.Errorf("u1's second personalised batch used the same items %v", u1.Items)
	}
	fmt.Printf("   u1's second batch follows the new list: %v, was %v\n", second["u1"].Items, u1.Items)
	return demoLoopMetrics(ctx, d)
}

// recsWithout waits (30s at most) until user's list holds none of items:
// items that got feedback are seen, and seen items leave the list.
func (d *demo) recsWithout(ctx context.Context, user string, items []string) (demoRecsView, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := d.recs(ctx, user)
		if err != nil {
			return v, err
		}
		if !slices.ContainsFunc(v.Items, func(s recsys.Scored) bool { return slices.Contains(items, s.Item) }) {
			return v, nil
		}
		if time.Now().After(deadline) {
			return v, fmt.Errorf("%s's recommendations still held some of %v 30s after the feedback (see %s)", user, items, d.logPath("scheduler"))
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return v, err
		}
	}
}

// demoLoopMetrics starts `producer serve` and reads the loop metrics the
// scheduler's loop-metrics consumer aggregated, and the dashboard.
func demoLoopMetrics(ctx context.Context, d *demo) error {
	addr := freeAddr()
	if err := d.start(ctx, "producer", "serve", "--addr", addr); err != nil {
		return err
	}
	if err := waitHealthy(ctx, addr); err != nil {
		return fmt.Errorf("producer serve: %w (see %s)", err, d.logPath("producer"))
	}
	d.api = "http://" + addr
	var v loop.MetricsView
	deadline := time.Now().Add(30 * time.Second)
	for v.Total.All.Events < 2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the loop metrics did not count the feedback within 30s (see %s)", d.logPath("scheduler"))
		}
		if err := getJSON(ctx, d.api+"/v1/loop/metrics?hours=1", &v); err != nil {
			return err
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	a := v.Total.All
	fmt.Printf("   GET /v1/loop/metrics: %d feedback events, %d accepted, %d rejected, acceptance %.0f%%\n", a.Events, a.Accept, a.Reject, *a.AcceptanceRate*100)
	page := filepath.Join(d.dir, "dashboard.html")
	resp, err := http.Get(d.api + "/dashboard")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /dashboard: %d %v", resp.StatusCode, err)
	}
	if err := os.WriteFile(page, b, 0o644); err != nil {
		return err
	}
	fmt.Printf("   dashboard: %s/dashboard while the demo runs; a copy in %s\n", d.api, page)
	return nil
}

func getJSON(ctx context.Context, url string, v any) error {
	return callJSON(ctx, http.MethodGet, url, nil, v)
}

// callJSON sends body (JSON, when not nil) and decodes the JSON answer
// into v; a non-2xx answer is an error with its body.
func callJSON(ctx context.Context, method, url string, body, v any) error {
	resp, err := call(ctx, method, url, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// call sends body (JSON, when not nil); a non-2xx answer is an error with
// its body. The caller closes the response.
func call(ctx context.Context, method, url string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, errors.New(method + " " + url + ": " + resp.Status + ": " + string(b))
	}
	return resp, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// demoChatModel is what u1 talks to at the end: the personalised batches'
// model. (demo-writer only knows the sentence pattern it was trained on
// and mostly stops at once on these prompts.)
const demoChatModel = "builtin:tiny"

// demoInteractive ends the demo the way a person closes the loop: u1
// prompts through POST /v1/completions with stream:true and reads each
// reply as it streams in, accepts the first (and rates it 2, then 5: a
// revision) and rejects the second (each
// asked for one of u1's two top recommended items, so the recommender
// sees the feedback), u1's list changes, and a personalised batch for u1
// follows the new list. It needs `producer serve` (demoLoopMetrics).
func demoInteractive(ctx context.Context, d *demo) error {
	step("the loop, interactively: u1 streams two replies, accepts and re-rates one, rejects the other")
	if d.api == "" {
		return errors.New("the interactive step needs producer serve, which the loop step starts")
	}
	before, err := d.recs(ctx, "u1")
	if err != nil {
		return err
	}
	if len(before.Items) < 2 {
		return fmt.Errorf("u1 has %d recommendations, want 2 to prompt from", len(before.Items))
	}
	picked := []string{before.Items[0].Item, before.Items[1].Item}
	fmt.Printf("   u1's list: %s\n", itemList(before.Items))
	for i, action := range []string{feedback.ActionAccept, feedback.ActionReject} {
		id, err := d.streamReply(ctx, "u1", picked[i])
		if err != nil {
			return err
		}
		var v struct{ ID, Event, Item string }
		if err := callJSON(ctx, http.MethodPost, d.api+"/v1/generations/"+id+"/feedback", loop.Feedback{Action: action}, &v); err != nil {
			return err
		}
		fmt.Printf("   POST /v1/generations/%s/feedback {\"action\":%q} -> %s of %s\n", id, action, v.Event, v.Item)
		if i == 0 {
			if err := d.rerate(ctx, id); err != nil {
				return err
			}
		}
	}
	after, err := d.recsWithout(ctx, "u1", picked)
	if err != nil {
		return err
	}
	fmt.Printf("   u1's list before: %s\n", itemList(before.Items))
	fmt.Printf("   u1's list after:  %s\n", itemList(after.Items))

	only := filepath.Join(d.files, "loop-u1.txt")
	if err := os.WriteFile(only, []byte("u1\n"), 0o644); err != nil {
		return err
	}
	_, batch, err := d.personalize(ctx, only, filepath.Join(d.files, "personalize-3"), filepath.Join(d.files, "catalog.jsonl"))
	if err != nil {
		return err
	}
	u1 := batch["u1"]
	var want []string
	for _, s := range after.Items[:min(2, len(after.Items))] {
		want = append(want, s.Item)
	}
	if !slices.Equal(u1.Items, want) {
		return fmt.Errorf("u1's personalised batch used %v, want the new list's top %v", u1.Items, want)
	}
	for _, id := range u1.Generations {
		var g loop.Generation
		if err := getJSON(ctx, d.api+"/v1/generations/"+id, &g); err != nil {
			return err
		}
		used := "template " + g.Template
		if g.Template == "" {
			used = "topic " + g.Topic
		}
		fmt.Printf("   %-12s %q -> %q\n", used, g.Prompt, truncate(g.Text, 40))
	}
	fmt.Printf("   u1's personalised batch uses the new list: %v, not %v\n", u1.Items, picked)
	return nil
}

// rerate rates generation id 2, then changes its mind to 5: the second
// rating is a revision that replaces the first, so the recommender and
// the loop metrics count 5, not 7 and not 2.
func (d *demo) rerate(ctx context.Context, id string) error {
	var first, second struct {
		ID       string
		Value    float64
		Revision int
		Previous float64
	}
	url := d.api + "/v1/generations/" + id + "/feedback"
	if err := callJSON(ctx, http.MethodPost, url, loop.Feedback{Action: feedback.ActionRate, Value: 2}, &first); err != nil {
		return err
	}
	if err := callJSON(ctx, http.MethodPost, url, loop.Feedback{Action: feedback.ActionRate, Value: 5}, &second); err != nil {
		return err
	}
	if second.Revision != 1 || second.Previous != 2 || second.Value != 5 {
		return fmt.Errorf("re-rating %s 5 after 2 answered revision %d, previous %g, value %g; want 1, 2, 5", id, second.Revision, second.Previous, second.Value)
	}
	fmt.Printf("   rated it %g (event %s), then %g: revision %d (event %s) replaces %g, so 5 is what counts\n",
		first.Value, first.ID, second.Value, second.Revision, second.ID, second.Previous)
	return nil
}

// demoChunk is the part of a streamed completion chunk the demo reads.
type demoChunk struct {
	ID      string `json:"id"`
	Choices []struct {
		Text string `json:"text"`
	} `json:"choices"`
	Usage  *generation.Usage   `json:"usage"`
	Timing *tokenstream.Timing `json:"timing"`
	Error  *tokenstream.Fault  `json:"error"`
}

// streamReply asks for catalog item on user's behalf through POST
// /v1/completions with stream:true, prints the tokens as they arrive and
// then the time to the first one, and returns the generation id.
func (d *demo) streamReply(ctx context.Context, user, item string) (string, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(item, "i"))
	if err != nil || n < 0 || n >= demoItems {
		return "", fmt.Errorf("item %q is not in the demo catalog", item)
	}
	e := demoCatalogEntry(n)
	body := map[string]any{"model": demoChatModel, "user": user, "max_tokens": 16, "temperature": 0.8}
	if e.Kind == jobs.ItemKindTopic {
		body["prompt"] = strings.TrimSpace(strings.ReplaceAll(jobs.DefaultTopicTemplate, "{{.topic}}", e.Topic))
		body["topic"] = item
	} else {
		body["prompt"] = strings.NewReplacer("{{.topic}}", e.Vars["topic"], "{{.user}}", user).Replace(e.Template)
		body["template"] = item
	}
	fmt.Printf("   %s asks %s for %s %s: %q\n", user, demoChatModel, e.Kind, item, body["prompt"])
	fmt.Print("   streamed: ")
	s, err := d.stream(ctx, body, os.Stdout)
	fmt.Println()
	if err != nil {
		return "", err
	}
	if s.tokens == 0 {
		fmt.Println("   (the model stopped before its first token)")
	} else {
		fmt.Printf("   first token after %.1f ms: HTTP -> Redis -> worker -> NATS -> HTTP, the model's own first token %.1f ms of it; %d tokens in %.0f ms\n",
			millis(s.first), s.timing.ModelFirstTokenMS, s.usage.CompletionTokens, millis(s.total))
	}
	return s.id, nil
}

// demoStream is one streamed completion as its client saw it.
type demoStream struct {
	id           string
	first, total time.Duration // from the request to the first token, to the end
	tokens       int           // the chunks that carried text
	usage        generation.Usage
	timing       tokenstream.Timing
}

// tokensPerSecond is the stream's rate after its first token, 0 when it
// had fewer than two.
func (s demoStream) tokensPerSecond() float64 {
	if s.tokens < 2 || s.total <= s.first {
		return 0
	}
	return float64(s.tokens-1) / (s.total - s.first).Seconds()
}

// String is the stream's figures as the demo prints them.
func (s demoStream) String() string {
	switch s.tokens {
	case 0:
		return "the model stopped before its first token"
	case 1:
		return fmt.Sprintf("first token after %.1f ms, the only one", millis(s.first))
	}
	return fmt.Sprintf("first token after %.1f ms, %d tokens at %.0f tokens/s", millis(s.first), s.tokens, s.tokensPerSecond())
}

// stream sends body to POST /v1/completions with stream:true, writes each
// token's text to echo as it arrives, and times the stream. An error
// event, or a stream that ends without its last chunk, is an error.
func (d *demo) stream(ctx context.Context, body map[string]any, echo io.Writer) (demoStream, error) {
	var s demoStream
	body["stream"] = true
	start := time.Now()
	resp, err := call(ctx, http.MethodPost, d.api+"/v1/completions", body)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	var last demoChunk
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			break
		}
		var c demoChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return s, fmt.Errorf("event stream: %w", err)
		}
		if c.Error != nil {
			return s, fmt.Errorf("generation %s: %s: %s", c.ID, c.Error.Code, c.Error.Message)
		}
		last = c
		for _, ch := range c.Choices {
			if ch.Text == "" {
				continue
			}
			if s.tokens++; s.tokens == 1 {
				s.first = time.Since(start)
			}
			fmt.Fprint(echo, strings.ReplaceAll(ch.Text, "\n", " "))
		}
	}
	s.total = time.Since(start)
	if err := sc.Err(); err != nil {
		return s, err
	}
	if last.ID == "" || last.Timing == nil || last.Usage == nil {
		return s, errors.New("the event stream ended without its last chunk")
	}
	s.id, s.usage, s.timing = last.ID, *last.Usage, *last.Timing
	return s, nil
}

// millis is d in milliseconds, for printing.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
