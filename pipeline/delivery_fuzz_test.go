package pipeline

import (
	"encoding/json"
	"testing"
)

// FuzzDeliveryDecode: a JetStream payload from any publisher. Decode must
// not panic, and a payload it refuses must be a BadEvent (dead-lettered at
// once, never retried). The dead-letter envelope built from any payload
// must itself decode and give the payload back.
func FuzzDeliveryDecode(f *testing.F) {
	for _, s := range []string{
		`{"user":"u1","item":"t1","kind":"rate","value":4}`,
		`{"user":1}`, `[`, ``, `null`, "\xff\xfe", `{"user":"\ud800"}`,
		`{"stream":"FEEDBACK","consumer":"c","subject":"s","stream_seq":1,"delivered":5,"cause":"bad_event","reason":"r","failed_at":"2026-01-01T00:00:00Z","data":{"a":1}}`,
		`{"data_base64":"!!"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := Delivery{Subject: "tandem.feedback.rate", StreamSeq: 7, Data: data}
		var ev feedbackEvent
		if err := d.Decode(&ev); err != nil && !IsBadEvent(err) {
			t.Fatalf("Decode error is not a BadEvent: %v", err)
		}
		var anyv any
		jerr := json.Unmarshal(data, &anyv)
		if derr := d.Decode(&anyv); (derr == nil) != (jerr == nil) {
			t.Fatalf("Decode into any disagrees with encoding/json: %v vs %v", derr, jerr)
		}

		// A consumer of the dead-letter subject reads envelopes published by
		// deadLetter; a hostile one must fail cleanly too.
		var got DeadLetter
		if err := json.Unmarshal(data, &got); err == nil {
			_ = got.Payload()
		}

		// Build an envelope the way deadLetter does and read it back.
		dl := DeadLetter{Stream: "S", Consumer: "c", Subject: d.Subject, StreamSeq: 7, Cause: DeadLetterBadEvent,
			Reason: truncateUTF8(string(data), MaxDeadLetterReason)}
		if json.Valid(data) {
			dl.Data = json.RawMessage(data)
		} else {
			dl.DataBase64 = data
		}
		if len(dl.Reason) > MaxDeadLetterReason+len("…") {
			t.Fatalf("reason is %d bytes, over MaxDeadLetterReason", len(dl.Reason))
		}
		enc, err := json.Marshal(dl)
		if err != nil {
			t.Fatalf("marshal envelope: %v", err)
		}
		var back DeadLetter
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatalf("envelope does not decode: %v", err)
		}
		if len(data) > 0 && string(back.Payload()) != string(compactIfJSON(data)) {
			t.Fatalf("payload changed through the envelope: %q -> %q", data, back.Payload())
		}
	})
}

// compactIfJSON mirrors what json.Marshal does to a RawMessage (it compacts
// it), so the round trip compares like with like.
func compactIfJSON(b []byte) []byte {
	if !json.Valid(b) {
		return b
	}
	var buf = make([]byte, 0, len(b))
	out, err := json.Marshal(json.RawMessage(b))
	if err != nil {
		return append(buf, b...)
	}
	return out
}
