package loop

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

var testGen = Generation{
	ID: "gen-1", User: "u7", Model: "demo@2", Template: "tpl-haiku", Topic: "autumn",
	Prompt: "Write a haiku about autumn:", Text: "leaves fall on the road", Source: "personalize",
}

func TestNewFeedbackEventMapsActions(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		fb    Feedback
		event string
		value float64
	}{
		{Feedback{Action: feedback.ActionAccept}, recsys.EventAccepted, 1},
		{Feedback{Action: feedback.ActionReject}, recsys.EventRejected, 1},
		{Feedback{Action: feedback.ActionRate, Value: 4}, recsys.EventRating, 4},
		{Feedback{Action: feedback.ActionEdit, EditedText: "leaves fall softly"}, recsys.EventEdited, 1},
		{Feedback{Action: feedback.ActionRegenerate}, recsys.EventRegenerated, 1},
	} {
		ev, err := NewFeedbackEvent(testGen, tc.fb, at)
		if err != nil {
			t.Fatalf("%s: %v", tc.fb.Action, err)
		}
		if ev.ID != "fb-"+tc.fb.Action+"-gen-1" || ev.Type != tc.event || ev.Value != tc.value || !ev.Time.Equal(at) {
			t.Errorf("%s: id %q event %q value %g ts %v", tc.fb.Action, ev.ID, ev.Type, ev.Value, ev.Time)
		}
		body, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		// The recommender reads the event as an interaction with the
		// template the generation used...
		var rev recsys.Event
		if err := json.Unmarshal(body, &rev); err != nil {
			t.Fatal(err)
		}
		if rev.ID != ev.ID || rev.User != "u7" || rev.Item != "tpl-haiku" || rev.ItemKind != "template" || rev.Type != tc.event || rev.Value != tc.value {
			t.Errorf("%s: as a recsys event: %+v", tc.fb.Action, rev)
		}
		// ...and the fine-tune collector and the metrics as feedback on it.
		fe, err := feedback.Decode(pipeline.FeedbackSubject(tc.event), body)
		if err != nil {
			t.Fatal(err)
		}
		if fe.GenerationID != "gen-1" || fe.Action != tc.fb.Action || fe.Prompt != testGen.Prompt || fe.Completion != testGen.Text ||
			fe.EditedText != tc.fb.EditedText || fe.Model != "demo@2" {
			t.Errorf("%s: as feedback on the generation: %+v", tc.fb.Action, fe)
		}
	}
	// The topic is the item when there is no template; with neither the
	// event has no recommender item.
	g := testGen
	g.Template = ""
	if ev, _ := NewFeedbackEvent(g, Feedback{Action: feedback.ActionAccept}, at); ev.Item != "autumn" || ev.ItemKind != "topic" {
		t.Errorf("topic generation: item %q kind %q", ev.Item, ev.ItemKind)
	}
	g.Topic = ""
	if ev, _ := NewFeedbackEvent(g, Feedback{Action: feedback.ActionAccept}, at); ev.Item != "" || ev.ItemKind != "" {
		t.Errorf("free generation: item %q kind %q", ev.Item, ev.ItemKind)
	}
}

func TestFeedbackRefusedNamingTheField(t *testing.T) {
	noUser := testGen
	noUser.User = ""
	for _, tc := range []struct {
		g     Generation
		fb    Feedback
		field string
	}{
		{testGen, Feedback{Action: "like"}, `"action"`},
		{testGen, Feedback{Action: feedback.ActionRate, Value: 6}, `"value"`},
		{testGen, Feedback{Action: feedback.ActionRate, Value: 2.5}, `"value"`},
		{testGen, Feedback{Action: feedback.ActionRate}, `"value"`},
		{testGen, Feedback{Action: feedback.ActionAccept, Value: 3}, `"value"`},
		{testGen, Feedback{Action: feedback.ActionEdit, EditedText: "  "}, `"edited_text"`},
		{testGen, Feedback{Action: feedback.ActionEdit, EditedText: strings.Repeat("x", feedback.MaxTextBytes+1)}, `"edited_text"`},
		{testGen, Feedback{Action: feedback.ActionReject, EditedText: "no"}, `"edited_text"`},
		{noUser, Feedback{Action: feedback.ActionAccept}, "no user"},
	} {
		_, err := NewFeedbackEvent(tc.g, tc.fb, time.Now())
		if !errors.Is(err, feedback.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want feedback.ErrInvalid naming %s", tc.fb, err, tc.field)
		}
	}
}

func TestFeedbackEventFitsTheBus(t *testing.T) {
	g := testGen
	// Quotes double in JSON: without cutting this would be ~130 KiB.
	g.Prompt = strings.Repeat(`"`, MaxRecordTextBytes)
	g.Text = strings.Repeat(`\`, MaxRecordTextBytes)
	ev, err := NewFeedbackEvent(g, Feedback{Action: feedback.ActionEdit, EditedText: strings.Repeat(`"`, feedback.MaxTextBytes)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ev.Encode()
	if len(b) > pipeline.MaxEventBytes || len(ev.EditedText) != feedback.MaxTextBytes || ev.Completion == "" {
		t.Fatalf("event is %d bytes (limit %d), edited text %d bytes, completion %d bytes", len(b), pipeline.MaxEventBytes, len(ev.EditedText), len(ev.Completion))
	}
}

func TestSendFeedback(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	s := NewStore(rdb, StoreOptions{})
	if err := s.Save(ctx, testGen); err != nil {
		t.Fatal(err)
	}
	var sent []feedback.Event
	publish := func(_ context.Context, ev feedback.Event) error { sent = append(sent, ev); return nil }
	ev, err := s.SendFeedback(ctx, "gen-1", Feedback{Action: feedback.ActionRate, Value: 5}, publish)
	if err != nil || len(sent) != 1 {
		t.Fatalf("SendFeedback: %v, %d sent", err, len(sent))
	}
	if got := sent[0]; got.Check("") != nil || got.ID != ev.Event.ID || got.Value != 5 || got.GenerationID != "gen-1" || got.Model != "demo@2" {
		t.Fatalf("sent %+v (%v)", got, got.Check(""))
	}
	if _, err := s.SendFeedback(ctx, "gen-nope", Feedback{Action: feedback.ActionAccept}, publish); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown generation: %v", err)
	}
	if _, err := s.SendFeedback(ctx, "a.b", Feedback{Action: feedback.ActionAccept}, publish); !errors.Is(err, feedback.ErrInvalid) {
		t.Fatalf("bad generation id: %v", err)
	}
	boom := errors.New("bus down")
	if _, err := s.SendFeedback(ctx, "gen-1", Feedback{Action: feedback.ActionAccept}, func(context.Context, feedback.Event) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("publisher error lost: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want float64
	}{
		{"", "", 0},
		{"same words here", "same  words\nhere", 0},
		{"a b c", "a x c", 1.0 / 3},
		{"a b", "", 1},
		{"a b c d", "a c d", 1.0 / 4},
		{"one two", "one two three four", 2.0 / 4},
		{"x y z", "p q", 1},
	} {
		if got := EditDistance(tc.a, tc.b); got < tc.want-1e-12 || got > tc.want+1e-12 {
			t.Errorf("EditDistance(%q, %q) = %g, want %g", tc.a, tc.b, got, tc.want)
		}
	}
	// Beyond MaxEditWords words the texts are not compared.
	long := strings.Repeat("w ", MaxEditWords)
	if got := EditDistance(long+"tail one", long+"other ending here"); got != 0 {
		t.Errorf("difference past MaxEditWords counted: %g", got)
	}
}
