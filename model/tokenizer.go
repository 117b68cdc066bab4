package model

import (
	"fmt"
	"sync"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// EOTToken is GPT-2's <|endoftext|> id, which ends documents and
// completions.
const EOTToken = 50256

// eotText is the literal text of the end-of-text token.
const eotText = "<|endoftext|>"

// Tokenizer is GPT-2's byte-level BPE (r50k_base). The vocabulary ships
// inside tiktoken-go-loader, so it works without network access. It is safe
// for concurrent use.
type Tokenizer struct {
	enc *tiktoken.Tiktoken
}

var (
	tokenizerOnce sync.Once
	tokenizerVal  *Tokenizer
	tokenizerErr  error
)

// NewTokenizer returns the shared GPT-2 tokenizer; building the BPE tables
// takes a moment, so it happens once per process.
func NewTokenizer() (*Tokenizer, error) {
	tokenizerOnce.Do(func() {
		tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
		enc, err := tiktoken.GetEncoding("r50k_base")
		if err != nil {
			tokenizerErr = fmt.Errorf("tokenizer: %w", err)
			return
		}
		tokenizerVal = &Tokenizer{enc: enc}
	})
	return tokenizerVal, tokenizerErr
}

// Encode tokenizes text. Special-token text such as "<|endoftext|>" is
// encoded as ordinary characters, so user input can never inject a
// document boundary.
func (t *Tokenizer) Encode(text string) []int32 {
	return toInt32(t.enc.EncodeOrdinary(text))
}

// EncodeWithEOT tokenizes trusted text in which "<|endoftext|>" stands
// for the end-of-text token (training corpora that mark boundaries so).
func (t *Tokenizer) EncodeWithEOT(text string) []int32 {
	return toInt32(t.enc.Encode(text, []string{eotText}, nil))
}

// Decode turns tokens back into text. Ids outside the vocabulary are
// dropped. A token sequence that splits a multi-byte character yields
// invalid UTF-8 at the cut; use DecodeBytes to stream text safely.
func (t *Tokenizer) Decode(tokens []int32) string {
	return string(t.DecodeBytes(tokens))
}

// DecodeBytes is Decode without the conversion to string.
func (t *Tokenizer) DecodeBytes(tokens []int32) []byte {
	ids := make([]int, len(tokens))
	for i, v := range tokens {
		ids[i] = int(v)
	}
	return []byte(t.enc.Decode(ids))
}

// EOT is the end-of-text token id.
func (t *Tokenizer) EOT() int32 { return EOTToken }

// VocabSize is the number of token ids (50257).
func (t *Tokenizer) VocabSize() int { return EOTToken + 1 }

func toInt32(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, v := range ids {
		out[i] = int32(v)
	}
	return out
}
