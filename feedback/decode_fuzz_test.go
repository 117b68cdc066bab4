package feedback

import (
	"errors"
	"testing"

	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// FuzzDecode: feedback events arrive from clients over NATS and POST
// /v1/feedback. Decoding must not panic; what it refuses is ErrInvalid,
// and what it accepts has a subject, a value within the range of its type
// (for a rating, the documented scale), and encodes to an event that
// decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"user":"u1","item":"template:ad","event":"click"}`))
	f.Add([]byte(`{"user":"u1","item":"i","event":"rating","value":4,"id":"e1","ts":1700000000}`))
	f.Add([]byte(`{"user":"","item":"i","event":"click"}`))
	f.Add([]byte(`{"user":"u","item":"i","event":"nope"}`))
	f.Add([]byte(`{"user":"u","item":"i","event":"edited","generation_id":"g1","action":"edit","edited_text":"x"}`))
	f.Add([]byte(`{"user":"u","item":"i","event":"rating","value":1e9}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := Decode("", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal is not ErrInvalid: %v", err)
			}
			return
		}
		if pipeline.FeedbackSubject(ev.Type) == "" {
			t.Fatalf("accepted event of type %q has no subject", ev.Type)
		}
		if ev.Type == recsys.EventRating && (ev.Value < 1 || ev.Value > 5) {
			t.Fatalf("accepted rating %g off the scale", ev.Value)
		}
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > pipeline.MaxEventBytes {
			return // invalid UTF-8 decodes to U+FFFD, three bytes for one; Publish refuses what grew too large
		}
		again, err := Decode(pipeline.FeedbackSubject(ev.Type), b)
		if err != nil || again.Digest() != ev.Digest() || !again.Time.Equal(ev.Time) {
			t.Fatalf("%s encodes to %s, which decodes to %+v (%v)", data, b, again, err)
		}
	})
}
