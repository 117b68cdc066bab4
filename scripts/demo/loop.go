package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/recsys"
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

// writeDemoCatalog writes the catalog that names the demo's 100 items.
func writeDemoCatalog(path string) error {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for i := 0; i < 100; i++ {
		e := jobs.CatalogEntry{ID: fmt.Sprintf("i%d", i), Kind: jobs.ItemKindTemplate, Template: demoTemplates[(i/2)%len(demoTemplates)], Vars: map[string]string{"topic": "our shop"}}
		if i%2 == 1 {
			e = jobs.CatalogEntry{ID: fmt.Sprintf("i%d", i), Kind: jobs.ItemKindTopic, Topic: demoTopics[(i/2)%len(demoTopics)]}
		}
		if err := enc.Encode(e); err != nil {
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
	catalog := filepath.Join(d.dir, "catalog.jsonl")
	if err := writeDemoCatalog(catalog); err != nil {
		return err
	}
	users := filepath.Join(d.dir, "loop-users.txt")
	if err := os.WriteFile(users, []byte("u1\nu7\n# a person with no history:\nnewcomer\nu1\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("   catalog %s (even items are templates, odd ones topics), users %s\n", catalog, users)
	_, first, err := d.personalize(ctx, users, filepath.Join(d.dir, "personalize-1"), catalog)
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
	for i, action := range []string{loop.ActionAccept, loop.ActionReject} {
		out, err := d.output(ctx, "producer", "feedback", "--generation", u1.Generations[i], "--action", action)
		if err != nil {
			return err
		}
		var v struct{ ID, Event, Item string }
		_ = json.Unmarshal([]byte(out), &v)
		fmt.Printf("   producer feedback --generation %s --action %s -> %s of %s (event %s)\n", u1.Generations[i], action, v.Event, v.Item, v.ID)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := d.recs(ctx, "u1")
		if err != nil {
			return err
		}
		// Both items got feedback, so both are seen and leave the list.
		if !slices.ContainsFunc(after.Items, func(s recsys.Scored) bool { return slices.Contains(u1.Items, s.Item) }) {
			fmt.Printf("   u1's list after the feedback: %s\n", itemList(after.Items))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("u1's recommendations still held %v 30s after the feedback (see %s)", u1.Items, d.logPath("scheduler"))
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	only := filepath.Join(d.dir, "loop-u1.txt")
	if err := os.WriteFile(only, []byte("u1\n"), 0o644); err != nil {
		return err
	}
	_, second, err := d.personalize(ctx, only, filepath.Join(d.dir, "personalize-2"), catalog)
	if err != nil {
		return err
	}
	if strings.Join(second["u1"].Items, ",") == strings.Join(u1.Items, ",") {
		return fmt.Errorf("u1's second personalised batch used the same items %v", u1.Items)
	}
	fmt.Printf("   u1's second batch follows the new list: %v, was %v\n", second["u1"].Items, u1.Items)
	return demoLoopMetrics(ctx, d)
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
	var v loop.MetricsView
	deadline := time.Now().Add(30 * time.Second)
	for v.Total.All.Events < 2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the loop metrics did not count the feedback within 30s (see %s)", d.logPath("scheduler"))
		}
		if err := getJSON(ctx, "http://"+addr+"/v1/loop/metrics?hours=1", &v); err != nil {
			return err
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	a := v.Total.All
	fmt.Printf("   GET /v1/loop/metrics: %d feedback events, %d accepted, %d rejected, acceptance %.0f%%\n", a.Events, a.Accept, a.Reject, *a.AcceptanceRate*100)
	page := filepath.Join(d.dir, "dashboard.html")
	resp, err := http.Get("http://" + addr + "/dashboard")
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
	fmt.Printf("   dashboard: http://%s/dashboard while the demo runs; a copy in %s\n", addr, page)
	return nil
}

func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New(url + ": " + resp.Status + ": " + string(b))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
