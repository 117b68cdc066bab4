package loop

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/pipeline"
)

// TestIntakeTakesTheGenerationFromItsRecord: feedback on a generation is
// checked against its record and rebuilt from it, on any subject it may
// arrive on; values are checked per type.
func TestIntakeTakesTheGenerationFromItsRecord(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	saveGeneration(t, rdb, "g1", "tpl-a", "m@1")
	in := NewIntake(rdb)
	forged := `{"user":"u1","event":"edited","generation_id":"g1","action":"edit","edited_text":"Quick fox.",
		"prompt":"forged","completion":"forged","model":"evil","topic":"evil"}`
	f, err := in.Check(ctx, pipeline.FeedbackSubject("edited"), []byte(forged), false)
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != "fb-edit-g1" || f.Prompt != "p" || f.Completion != "the quick brown fox" || f.Model != "m@1" || f.Topic != "" ||
		f.Item != "tpl-a" || f.ItemKind != "template" || f.EditedText != "Quick fox." {
		t.Fatalf("checked event %+v, want the record's fields", f)
	}
	other := strings.Replace(forged, `"user":"u1"`, `"user":"u2"`, 1)
	if _, err := in.Check(ctx, "", []byte(other), false); !errors.Is(err, ErrWrongUser) {
		t.Fatalf("another user: %v, want ErrWrongUser", err)
	}
	if f, err := in.Check(ctx, "", []byte(other), true); err != nil || f.User != "u1" {
		t.Fatalf("acting for others: %+v %v, want the generation's user", f, err)
	}
	if _, err := in.Check(ctx, "", []byte(strings.Replace(forged, `"g1"`, `"g404"`, 1)), false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown generation: %v, want ErrNotFound", err)
	}
	for body, field := range map[string]string{
		`{"user":"u1","item":"i","event":"dwell","value":0}`:                                `"value"`,
		`{"user":"u1","item":"i","event":"dwell","value":3601}`:                             `"value"`,
		`{"user":"u1","item":"i","event":"click","previous":1}`:                             `"previous"`,
		`{"user":"u1","item":"i","event":"rating","value":4,"previous":9}`:                  `"previous"`,
		`{"user":"u1","event":"rating","value":4.5,"generation_id":"g1","action":"rate"}`:   `"value"`,
		`{"user":"u1","event":"accepted","value":3,"generation_id":"g1","action":"accept"}`: `"value"`,
		`{"user":"u1","event":"accepted","generation_id":"g1"}`:                             `"action"`,
	} {
		if _, err := in.Check(ctx, "", []byte(body), false); !errors.Is(err, feedback.ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want feedback.ErrInvalid naming %s", body, err, field)
		}
	}
	if _, err := in.Check(ctx, "", []byte(`{"user":"u1","item":"i","event":"dwell","value":12.5}`), false); err != nil {
		t.Fatalf("a dwell of 12.5 s: %v", err)
	}
}

// TestIntakeClaimsOneContentPerID: the same content under an id again is
// a no-op, whatever its time; other content under it is ErrReusedID.
func TestIntakeClaimsOneContentPerID(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	in := NewIntake(rdb)
	accept := func(body string) error {
		ev, err := in.Check(ctx, "", []byte(body), false)
		if err != nil {
			return err
		}
		return in.Claim(ctx, ev)
	}
	if err := accept(`{"id":"e1","user":"u1","item":"i1","event":"rating","value":4,"ts":1700000000}`); err != nil {
		t.Fatal(err)
	}
	if err := accept(`{"id":"e1","user":"u1","item":"i1","event":"rating","value":4,"ts":1700000999}`); err != nil {
		t.Fatalf("the same content restamped: %v", err)
	}
	err := accept(`{"id":"e1","user":"u1","item":"i1","event":"rating","value":5}`)
	if !errors.Is(err, ErrReusedID) || !strings.Contains(err.Error(), `"e1"`) {
		t.Fatalf("other content under e1: %v, want ErrReusedID naming it", err)
	}
	if ttl := rdb.TTL(ctx, ClaimKey("e1")).Val(); ttl < DefaultRecordTTL || ttl > DefaultSeenTTL+time.Minute {
		t.Fatalf("claim kept %v, want the dedupe horizon %v", ttl, DefaultSeenTTL)
	}
}
