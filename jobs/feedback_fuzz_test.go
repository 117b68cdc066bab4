package jobs

import (
	"errors"
	"testing"
)

// FuzzDecodeFeedbackEvent: feedback events arrive from clients over NATS
// and POST /v1/feedback. Decoding must not panic; what it accepts must pass
// the same check the consumer applies, and what it refuses is ErrBadFeedback.
func FuzzDecodeFeedbackEvent(f *testing.F) {
	f.Add([]byte(`{"user":"u1","item":"template:ad","event":"click"}`))
	f.Add([]byte(`{"user":"u1","item":"i","event":"rating","value":4,"id":"e1","ts":1700000000}`))
	f.Add([]byte(`{"user":"","item":"i","event":"click"}`))
	f.Add([]byte(`{"user":"u","item":"i","event":"nope"}`))
	f.Add([]byte(`{"user":"u","item":"i","event":"edited","generation_id":"g1","edited_text":"x"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeFeedbackEvent(data)
		if err != nil {
			if !errors.Is(err, ErrBadFeedback) {
				t.Fatalf("refusal is not ErrBadFeedback: %v", err)
			}
			return
		}
		if err := CheckFeedbackEvent(ev); err != nil {
			t.Fatalf("decoded event fails the consumer's check: %v", err)
		}
	})
}
