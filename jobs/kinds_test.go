package jobs

import (
	"slices"
	"strings"
	"testing"
)

// The public kinds are the ones a client of the API may enqueue; every
// other kind is internal and says who enqueues it. CheckPublic refuses the
// internal ones by name, and unknown ones listing only the public kinds.
func TestInternalKindsAreNotPublic(t *testing.T) {
	public := []string{KindEval, KindFinetune, KindFinetuneFeedback, KindGenerate, KindPersonalize, KindPing, KindRecsRebuild}
	slices.Sort(public)
	if got := PublicNames(); !slices.Equal(got, public) {
		t.Fatalf("PublicNames() = %v; want %v", got, public)
	}
	for _, name := range public {
		if err := CheckPublic(name); err != nil {
			t.Errorf("CheckPublic(%s) = %v", name, err)
		}
	}
	internal := []string{KindBatchChunk, KindBatchFinalize, KindWebhook, KindInteractive, KindEmbeddings, KindRecsFanout, KindRecsShard, KindRecsMerge, KindRecsUserUpdate, KindRecsEval}
	if len(internal)+len(public) != len(Names()) {
		t.Fatalf("%d public and %d internal kinds, %d in all: a new kind must be sorted into one", len(public), len(internal), len(Names()))
	}
	for _, name := range internal {
		err := CheckPublic(name)
		want := `kind: "` + name + `" is internal; only the pipeline enqueues it (` + Internal(name) + `)`
		if Internal(name) == "" || err == nil || err.Error() != want {
			t.Errorf("CheckPublic(%s) = %v; want %q", name, err, want)
		}
	}
	if err := CheckPublic(KindWebhook); err == nil || err.Error() != `kind: "webhook" is internal; only the pipeline enqueues it (a batch's lifecycle events enqueue it, signed)` {
		t.Errorf("CheckPublic(webhook) = %v", err)
	}
	for _, name := range []string{"", "nope", strings.Repeat("k", 1000)} {
		err := CheckPublic(name)
		if err == nil || !strings.HasPrefix(err.Error(), "kind: ") || !strings.HasSuffix(err.Error(), "(public kinds: "+strings.Join(public, ", ")+")") || len(err.Error()) > 300 {
			t.Errorf("CheckPublic(%.20q...) = %v; want a short refusal listing the public kinds", name, err)
		}
	}
}
