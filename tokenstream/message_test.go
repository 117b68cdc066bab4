package tokenstream

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/tandem-ai/tandem/pipeline"
)

// newID is a fresh generation id.
func newID() string { return "cmpl-" + rand.Text() }

// sealedMsg is a token-stream message of generation id sealed with key.
func sealedMsg(t *testing.T, key, id, raw string) *nats.Msg {
	t.Helper()
	m := &nats.Msg{Subject: pipeline.GenTokensSubject(id), Data: []byte(raw)}
	if err := pipeline.Seal(key, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDecoderRefusesGapsAndUnknownTypes(t *testing.T) {
	key, id := pipeline.NewSealKey(), newID()
	rd := Decoder{Key: key}
	if _, err := rd.Decode(sealedMsg(t, key, id, `{"seq":0,"type":"start"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Decode(sealedMsg(t, key, id, `{"seq":2,"type":"token","text":"x"}`)); err == nil || !strings.Contains(err.Error(), "lost") {
		t.Fatalf("gap: %v", err)
	}
	for _, raw := range []string{
		`{"seq":0,"type":"bogus"}`,
		`{"seq":0,"type":"done","finish_reason":"stop"}`, // no usage
		`{"seq":0,"type":"error"}`,                       // no error
	} {
		rd2 := Decoder{Key: key}
		if _, err := rd2.Decode(sealedMsg(t, key, id, raw)); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
}

// A token of a choice the generation does not have, or a done message
// whose choices are not 0..n-1 in order, is refused: the producer indexes
// its replies by them.
func TestDecoderRefusesChoicesOutOfRange(t *testing.T) {
	key, id := pipeline.NewSealKey(), newID()
	for raw, n := range map[string]int{
		`{"seq":0,"type":"token","choice":3,"text":"x","token":87}`:              3,
		`{"seq":0,"type":"token","choice":1,"text":"x","token":87}`:              0,
		`{"seq":0,"type":"token","choice":-1,"text":"x","token":87}`:             2,
		`{"seq":0,"type":"done","usage":{},"choices":[{"index":0},{"index":2}]}`: 3,
		`{"seq":0,"type":"done","usage":{},"choices":[{"index":0},{"index":1}]}`: 1,
	} {
		rd := Decoder{Key: key, N: n}
		if _, err := rd.Decode(sealedMsg(t, key, id, raw)); err == nil || !strings.Contains(err.Error(), "choice") {
			t.Errorf("n=%d: %s: %v, want an error naming the choice", n, raw, err)
		}
	}
	rd := Decoder{Key: key, N: 2}
	for _, raw := range []string{
		`{"seq":0,"type":"token","choice":1,"text":"x","token":87}`,
		`{"seq":1,"type":"done","usage":{},"choices":[{"index":0},{"index":1}]}`,
	} {
		if _, err := rd.Decode(sealedMsg(t, key, id, raw)); err != nil {
			t.Fatalf("n=2: %s: %v", raw, err)
		}
	}
}

// A message not sealed with the generation's key (none, another key, or
// this key on another generation's subject) is refused as forged.
func TestDecoderRefusesForgedMessages(t *testing.T) {
	key, id := pipeline.NewSealKey(), newID()
	const start = `{"seq":0,"type":"start"}`
	unsealed := &nats.Msg{Subject: pipeline.GenTokensSubject(id), Data: []byte(start)}
	otherKey := sealedMsg(t, pipeline.NewSealKey(), id, start)
	otherGen := sealedMsg(t, key, newID(), start)
	otherGen.Subject = pipeline.GenTokensSubject(id) // replayed onto this stream
	tampered := sealedMsg(t, key, id, start)
	tampered.Data = []byte(`{"seq":0,"type":"done"}`)
	for name, m := range map[string]*nats.Msg{"unsealed": unsealed, "another key": otherKey, "another generation": otherGen, "tampered body": tampered} {
		rd := Decoder{Key: key}
		if _, err := rd.Decode(m); !errors.Is(err, pipeline.ErrForged) {
			t.Errorf("%s: %v; want pipeline.ErrForged", name, err)
		}
	}
	rd := Decoder{Key: key}
	if _, err := rd.Decode(sealedMsg(t, key, id, start)); err != nil {
		t.Fatalf("the genuine start after refusals: %v", err)
	}
}
