package model

import "testing"

func TestTokenizerGPT2(t *testing.T) {
	tok, err := NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	// Ids of GPT-2's r50k_base for a well-known string.
	got := tok.Encode("Hello world")
	want := []int32{15496, 995}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
	for _, s := range []string{"", "The quick brown fox — jumps 😀 over\n\tthe lazy dog.", "  spaces  "} {
		if back := tok.Decode(tok.Encode(s)); back != s {
			t.Fatalf("round trip %q -> %q", s, back)
		}
	}
	if tok.EOT() != 50256 || tok.VocabSize() != 50257 {
		t.Fatal("EOT / vocab size")
	}
	// User text cannot smuggle in the end-of-text token...
	for _, id := range tok.Encode("a<|endoftext|>b") {
		if id == tok.EOT() {
			t.Fatal("Encode produced EOT from text")
		}
	}
	// ...but trusted corpora can mark it.
	ids := tok.EncodeWithEOT("a<|endoftext|>b")
	found := false
	for _, id := range ids {
		found = found || id == tok.EOT()
	}
	if !found {
		t.Fatalf("EncodeWithEOT = %v has no EOT", ids)
	}
	if tok.Decode([]int32{-5, 1 << 30}) != "" {
		t.Fatal("out-of-range ids must decode to nothing")
	}
}
