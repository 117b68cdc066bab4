package feedback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// The two examples of docs/EVENTS.md, feedback on a generation and a
// revision of a rating, compacted, their fields in the order they are
// encoded.
const (
	editExample = `{"id":"fb-edit-pz-4f1c0e2a9b7d3c5e6f708192","user":"u1","item":"i4","event":"edited",` +
		`"value":1,"ts":"2026-11-29T10:30:00.123Z","kind":"template",` +
		`"generation_id":"pz-4f1c0e2a9b7d3c5e6f708192","action":"edit",` +
		`"template":"i4","topic":"i5","model":"demo-writer@3","source":"personalize",` +
		`"prompt":"Write a haiku about a city marathon:","completion":"runners in the rain",` +
		`"edited_text":"Runners in the rain, / ..."}`
	revisionExample = `{"id":"fb-rate-cmpl-9f2c41d07a3b5e6f8d1c2b3a.r1","user":"u1","item":"i4","event":"rating",` +
		`"value":5,"ts":"2026-11-29T11:02:00.456Z","kind":"template","previous":2,` +
		`"generation_id":"cmpl-9f2c41d07a3b5e6f8d1c2b3a","action":"rate","template":"i4","model":"demo-writer@3",` +
		`"source":"interactive","prompt":"…","completion":"…","revision":1,"rated_at":"2026-11-29T10:31:00.123Z"}`
)

// TestEncodeKeepsTheWireFormat: feedback on a generation decodes and
// encodes to the very bytes docs/EVENTS.md shows, so every version of the
// producer and the consumers reads what the others write.
func TestEncodeKeepsTheWireFormat(t *testing.T) {
	for _, want := range []string{editExample, revisionExample} {
		ev, err := Decode("", []byte(want))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("encoded\n %s\nwant\n %s", got, want)
		}
	}
	// HTML characters stay as they are: a text keeps its size.
	ev, _ := Decode("", []byte(editExample))
	ev.EditedText = "<b>&</b>"
	if b, _ := ev.Encode(); !bytes.Contains(b, []byte(`"edited_text":"<b>&</b>"`)) {
		t.Errorf("encoded %s", b)
	}
}

// TestPlainEventsTravelAsSent: a plain recommender event is not feedback
// on a generation; it keeps the client's fields and form, with an id
// written in when it had none, and one built here has the recommender's
// shape.
func TestPlainEventsTravelAsSent(t *testing.T) {
	body := `{"user":"u1","item":"i1","event":"click","ts":1700000000,"prompt":"context kept"}`
	ev, err := Decode(pipeline.FeedbackSubject("click"), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if ev.OnGeneration() || ev.Value != 1 || ev.Time.Unix() != 1700000000 || ev.Prompt != "" || ev.ID != "" {
		t.Fatalf("decoded %+v: want a plain click of value 1 at 1700000000, no prompt, no id", ev)
	}
	if b, _ := ev.Encode(); string(b) != body {
		t.Errorf("encoded %s, want the body as sent", b)
	}
	ev.ID = "e1"
	b, _ := ev.Encode()
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil || fields["id"] != "e1" || fields["prompt"] != "context kept" || fields["ts"] != 1700000000.0 {
		t.Errorf("with an id: %s (%v)", b, err)
	}
	built := Event{ID: "e2", User: "u1", Item: "i1", Type: recsys.EventView, Value: 2}
	if b, _ := built.Encode(); string(b) != `{"id":"e2","user":"u1","item":"i1","event":"view","value":2}` {
		t.Errorf("a built plain event encodes as %s", b)
	}
	if in := ev.Interaction(); in != (recsys.Event{ID: "e1", User: "u1", Item: "i1", Type: "click", Value: 1, Time: ev.Time}) {
		t.Errorf("as the recommender's: %+v", in)
	}
}

// TestRulesNameTheField: every refusal is ErrInvalid naming the field at
// fault; feedback on a generation without an id gets the one its
// generation and action give.
func TestRulesNameTheField(t *testing.T) {
	gen := `"generation_id":"g1","action":"accept","event":"accepted","user":"u1"`
	for _, tc := range []struct{ subject, body, want string }{
		{"", `{"user":"u1","item":"i1","event":"click","value":"x"}`, `field "value": want float64`},
		{"", `{"user":"u1","item":"i1","event":"click","ts":"yesterday"}`, `field "ts"`},
		{"", `[1,2]`, "not a JSON object"},
		{"", `{"user":"u1","item":"i1","event":"click","x":"` + strings.Repeat("x", pipeline.MaxEventBytes) + `"}`, "limit 65536"},
		{"", `{"user":"u1","item":"i1","event":"teleport"}`, `field "event": unknown event type`},
		{"", `{"item":"i1","event":"click"}`, `field "user": required`},
		{"", `{"user":"u1","event":"click"}`, `field "item": required`},
		{"tandem.feedback.click", `{"user":"u1","item":"i1","event":"rating","value":4}`, `field "event": "rating" arrived on subject`},
		{"", `{"user":"u1","item":"i1","event":"rating","value":6}`, `field "value": 6 is out of range for event "rating": want [1, 5]`},
		{"", `{"user":"u1","item":"i1","event":"dwell","value":0}`, `want (0, 3600]`},
		{"", `{"user":"u1","item":"i1","event":"click","value":101}`, `want [1, 100]`},
		{"", `{"user":"u1","item":"i1","event":"click","previous":1}`, `field "previous": only a rating`},
		{"", `{"user":"u1","item":"i1","event":"rating","value":4,"previous":9}`, `field "previous": 9 is not a rating`},
		{"", `{` + gen + `,"value":2}`, `field "value": 2 is out of range for event "accepted": want 1`},
		{"", `{"generation_id":"g1","action":"like","event":"accepted","user":"u1"}`, `field "action": "like" is not one of`},
		{"", `{"generation_id":"a.b","action":"accept","event":"accepted","user":"u1"}`, `field "generation_id"`},
		{"", `{"generation_id":"g1","action":"accept","event":"rejected","user":"u1"}`, `field "event": "rejected" does not go with action "accept"`},
		{"", `{"generation_id":"g1","action":"rate","event":"rating","value":4.5,"user":"u1"}`, `field "value": a rating must be an integer`},
		{"", `{` + gen + `,"id":"mine"}`, `field "id": feedback "accept" on generation g1 has the id "fb-accept-g1", not "mine"`},
		{"", `{` + gen + `,"revision":1,"previous":2,"rated_at":"2026-11-29T10:31:00Z"}`, `field "revision": only a rating is revised`},
		{"", `{"generation_id":"g1","action":"rate","event":"rating","value":4,"user":"u1","revision":1,"previous":3}`, `field "rated_at": required`},
	} {
		_, err := Decode(tc.subject, []byte(tc.body))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.80s: %v, want ErrInvalid with %q", tc.body, err, tc.want)
		}
	}
	ev, err := Decode("", []byte(`{`+gen+`}`))
	if err != nil || ev.ID != "fb-accept-g1" || !ev.OnGeneration() || ev.Item != "" {
		t.Fatalf("feedback without an id: %+v, %v", ev, err)
	}
}

// TestPublishChecksFirst: Publish refuses what the rules refuse before it
// needs a bus.
func TestPublishChecksFirst(t *testing.T) {
	ctx := context.Background()
	if _, err := Publish(ctx, nil, Event{User: "u1", Item: "i1", Type: recsys.EventRating, Value: 9}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a rating of 9: %v, want ErrInvalid", err)
	}
	ev, err := Publish(ctx, nil, Event{User: "u1", Item: "i1", Type: recsys.EventClick, Value: 1})
	if err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "NATS") || ev.ID == "" {
		t.Fatalf("no bus: %+v, %v; want the event with a random id and an error naming NATS", ev, err)
	}
}
