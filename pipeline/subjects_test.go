package pipeline

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSubjectBuilders(t *testing.T) {
	cases := []struct{ got, want string }{
		{BatchProgressSubject("b-01HZX_9"), "tandem.batch.b-01HZX_9.progress"},
		{GenTokensSubject("g7"), "tandem.gen.g7.tokens"},
		{GenCancelSubject("g7"), "tandem.gen.g7.cancel"},
		{GenCancelSubject("g.7"), ""},
		{GenCancelSubject(">"), ""},
		{FeedbackSubject("rating"), "tandem.feedback.rating"},
		{EventSubject("batch.completed"), "tandem.events.batch.completed"},
		{DeadLetterSubject("recsys"), "tandem.dlq.recsys"},
		// Ids that would split or widen a subject give "" (refused on publish).
		{BatchProgressSubject(""), ""},
		{BatchProgressSubject("a.b"), ""},
		{BatchProgressSubject(">"), ""},
		{BatchProgressSubject("*"), ""},
		{GenTokensSubject("x y"), ""},
		{GenTokensSubject("x\ny"), ""},
		{GenTokensSubject(strings.Repeat("a", MaxTokenLen+1)), ""},
		{FeedbackSubject("rating."), ""},
		{FeedbackSubject("a..b"), ""},
		{EventSubject("batch.*"), ""},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if GenTokensSubject(strings.Repeat("a", MaxTokenLen)) == "" {
		t.Error("an id of exactly MaxTokenLen was refused")
	}
}

func TestSubjectValidateID(t *testing.T) {
	for _, id := range []string{"", "a.b", "a b", "a*", "a>", "ü", "a/b", strings.Repeat("z", MaxTokenLen+1)} {
		if err := ValidateID(id); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ValidateID(%q) = %v, want ErrBadSubject", id, err)
		}
	}
	for _, id := range []string{"a", "B-1", "x_y", "0123456789"} {
		if err := ValidateID(id); err != nil {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
}

func TestSubjectValidation(t *testing.T) {
	literal := []string{"tandem.feedback.rating", "a", "a-b.c_d"}
	wild := []string{"tandem.feedback.>", "tandem.batch.*.progress", ">", "*"}
	bad := []string{"", ".", "a.", ".a", "a..b", "a b", "a\tb", "a.>.b", "a.b>", "a*.b", strings.Repeat("a", 1025)}
	for _, s := range literal {
		if err := validateSubject(s, false); err != nil {
			t.Errorf("validateSubject(%q, literal) = %v", s, err)
		}
	}
	for _, s := range wild {
		if err := validateSubject(s, true); err != nil {
			t.Errorf("validateSubject(%q, wildcards) = %v", s, err)
		}
		if err := validateSubject(s, false); !errors.Is(err, ErrBadSubject) {
			t.Errorf("validateSubject(%q, literal) = %v, want ErrBadSubject", s, err)
		}
	}
	for _, s := range bad {
		if err := validateSubject(s, true); !errors.Is(err, ErrBadSubject) {
			t.Errorf("validateSubject(%q) = %v, want ErrBadSubject", s, err)
		}
	}
}

// The streams own disjoint subjects, none of them a core-NATS one, and
// stay within the embedded server's store.
func TestSubjectStreamSpecs(t *testing.T) {
	var total int64
	names := map[string]bool{}
	for _, s := range DefaultStreams() {
		if err := s.validate(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		names[s.Name] = true
		total += s.MaxBytes
		cfg := s.StreamConfig()
		if cfg.Duplicates != DuplicateWindow || cfg.Storage.String() != "File" || cfg.Replicas != 1 {
			t.Errorf("%s: config %+v", s.Name, cfg)
		}
		for _, subj := range s.Subjects {
			for _, core := range []string{BatchProgressSubject("x"), GenTokensSubject("x"), GenCancelSubject("x")} {
				if strings.HasPrefix(core, strings.TrimSuffix(subj, ">")) {
					t.Errorf("stream %s (%s) would store core subject %s", s.Name, subj, core)
				}
			}
		}
	}
	for _, n := range []string{StreamFeedback, StreamEvents, StreamDeadLetter} {
		if !names[n] {
			t.Errorf("stream %s missing from DefaultStreams", n)
		}
	}
	if total > embeddedMaxStore {
		t.Errorf("streams reserve %d bytes, embedded store is %d", total, embeddedMaxStore)
	}
	if bad := (StreamSpec{Name: "X", Subjects: []string{"x.>"}, MaxBytes: 1, MaxMsgSize: 1}); bad.validate() == nil {
		t.Error("a stream without MaxAge was accepted")
	}
}

func TestSubjectTruncateUTF8(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	got := truncateUTF8(s, 5)
	if !utf8.ValidString(got) || got != "éé…" {
		t.Fatalf("truncateUTF8 = %q", got)
	}
	if truncateUTF8("short", 10) != "short" {
		t.Fatal("short string changed")
	}
}
