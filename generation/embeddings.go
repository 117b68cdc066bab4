package generation

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
)

// EmbeddingsURL is the endpoint of embeddings: POST /v1/embeddings, and
// the url of a batch line whose body is an EmbeddingsBody.
const EmbeddingsURL = "/v1/embeddings"

// MaxEmbeddingInputs bounds the inputs of one embeddings request.
const MaxEmbeddingInputs = limits.EmbeddingInputs

// Encoding formats of an embeddings response.
const (
	EncodingFloat  = "float"  // each vector a JSON array of numbers
	EncodingBase64 = "base64" // each vector its float32s, little-endian, in base64
)

// EmbeddingsBody is the OpenAI /v1/embeddings request body. Unknown fields
// are refused by the decoders that read it (the API, ParseRequestLine).
type EmbeddingsBody struct {
	Model string         `json:"model,omitempty"`
	Input EmbeddingInput `json:"input"`
	// EncodingFormat is EncodingFloat (the default) or EncodingBase64.
	EncodingFormat string `json:"encoding_format,omitempty"`
	// Dimensions must equal the model's width when given: GPT-2 style
	// models have no trained way to shorten their vectors.
	Dimensions *int   `json:"dimensions,omitempty"`
	User       string `json:"user,omitempty"`
}

// EmbeddingInput is OpenAI's embeddings "input", in any of Inputs' forms;
// its errors name "input", "input[i]" or "input[i][j]".
type EmbeddingInput Inputs

// Len is the number of inputs.
func (in EmbeddingInput) Len() int { return Inputs(in).Len() }

// UnmarshalJSON implements json.Unmarshaler. Its errors are
// *RequestError naming the input at fault.
func (in *EmbeddingInput) UnmarshalJSON(b []byte) error {
	v, err := DecodeInputs(b, "input", MaxEmbeddingInputs)
	*in = EmbeddingInput(v)
	return err
}

// MarshalJSON implements json.Marshaler: the form the input came in.
func (in EmbeddingInput) MarshalJSON() ([]byte, error) { return Inputs(in).MarshalJSON() }

// param names input i as a request's "param".
func (in EmbeddingInput) param(i int) string { return Inputs(in).Param("input", i) }

// tokenParam names token j of input i.
func (in EmbeddingInput) tokenParam(i, j int) string { return Inputs(in).TokenParam("input", i, j) }

// RequestError is a request the server refuses: Param names the body
// field at fault (OpenAI's "param"), Code is the API's error code.
type RequestError struct {
	Code    string `json:"code"`
	Param   string `json:"param,omitempty"`
	Message string `json:"message"`
}

func (e *RequestError) Error() string {
	if e.Param == "" {
		return e.Message
	}
	return e.Param + ": " + e.Message
}

// Codes of a RequestError.
const (
	CodeInvalidRequest = "invalid_request"
	CodeContextLength  = "context_length_exceeded"
)

func invalid(param, format string, args ...any) *RequestError {
	return &RequestError{Code: CodeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

// Validate checks what can be checked without the model: one to
// MaxEmbeddingInputs inputs, none empty, texts valid UTF-8, token ids not
// negative, a known encoding format, positive dimensions, a user id as
// generation records bound it (limits.RecordIDBytes). The error is a
// *RequestError naming the field.
func (b EmbeddingsBody) Validate() error {
	in := b.Input
	switch n := in.Len(); {
	case n == 0:
		return invalid("input", "required (a string, a list of strings, a list of token ids or a list of lists of them)")
	case n > MaxEmbeddingInputs:
		return invalid("input", "%d inputs, at most %d", n, MaxEmbeddingInputs)
	}
	if err := Inputs(in).Check("input"); err != nil {
		return err
	}
	switch b.EncodingFormat {
	case "", EncodingFloat, EncodingBase64:
	default:
		return invalid("encoding_format", "%.32q; want %q or %q", b.EncodingFormat, EncodingFloat, EncodingBase64)
	}
	if b.Dimensions != nil && *b.Dimensions < 1 {
		return invalid("dimensions", "%d; want the model's width (or leave it out)", *b.Dimensions)
	}
	if len(b.User) > limits.RecordIDBytes || !utf8.ValidString(b.User) || strings.ContainsAny(b.User, "\x00\n") {
		return invalid("user", "at most %d bytes of UTF-8 without NUL or newline", limits.RecordIDBytes)
	}
	return nil
}

// EmbeddingsResponse is the /v1/embeddings response body.
type EmbeddingsResponse struct {
	Object string          `json:"object"` // "list"
	Data   []Embedding     `json:"data"`
	Model  string          `json:"model"`
	Usage  EmbeddingsUsage `json:"usage"`
}

// Embedding is one input's vector.
type Embedding struct {
	Object    string          `json:"object"` // "embedding"
	Index     int             `json:"index"`
	Embedding EmbeddingVector `json:"embedding"`
}

// EmbeddingsUsage counts the tokens of the inputs.
type EmbeddingsUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// EmbeddingVector is a vector in the encoding it is sent in: a list of
// numbers, or with Base64 its float32s little-endian in one base64 string
// (how OpenAI's clients decode encoding_format "base64").
type EmbeddingVector struct {
	Values []float32
	Base64 bool
}

// MarshalJSON implements json.Marshaler.
func (v EmbeddingVector) MarshalJSON() ([]byte, error) {
	if !v.Base64 {
		if v.Values == nil {
			return []byte("[]"), nil
		}
		return json.Marshal(v.Values)
	}
	raw := make([]byte, 4*len(v.Values))
	for i, x := range v.Values {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(raw))
}

// UnmarshalJSON implements json.Unmarshaler: either encoding.
func (v *EmbeddingVector) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '"' {
		v.Base64 = false
		return json.Unmarshal(b, &v.Values)
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw)%4 != 0 {
		return errors.New("embedding: not base64 of little-endian float32s")
	}
	v.Base64, v.Values = true, make([]float32, len(raw)/4)
	for i := range v.Values {
		v.Values[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return nil
}

// SetEncoding sends every vector in format (EncodingFloat or
// EncodingBase64; "" is EncodingFloat).
func (r *EmbeddingsResponse) SetEncoding(format string) {
	for i := range r.Data {
		r.Data[i].Embedding.Base64 = format == EncodingBase64
	}
}

// embedSlice is how many inputs Embeddings embeds between looks at its
// context.
const embedSlice = 256

// Embeddings answers an embeddings request on the model: texts tokenised
// with tok, token ids checked against the vocabulary, each input at most
// the model's context, dimensions (when given) the model's width; then
// every input embedded (model.Model.Embed: the mean of the final
// LayerNorm's output over the input's tokens, unit length) in the body's
// encoding. A refusal is a *RequestError naming the input ("input[2]")
// or field; CodeContextLength for an input longer than the context.
//
// It runs on the host copy of the weights with caches of its own, beside
// the engine's decoding and without the lock Perplexity takes.
func (l *LoadedModel) Embeddings(ctx context.Context, tok *model.Tokenizer, b EmbeddingsBody) (EmbeddingsResponse, error) {
	var resp EmbeddingsResponse
	if err := b.Validate(); err != nil {
		return resp, err
	}
	cfg := l.Model.Config
	if b.Dimensions != nil && *b.Dimensions != cfg.NEmbd {
		return resp, invalid("dimensions", "%d; model %s gives vectors of %d dimensions and cannot shorten them", *b.Dimensions, l.Name, cfg.NEmbd)
	}
	in := b.Input
	inputs := in.Tokens
	if in.Texts != nil {
		inputs = make([][]int32, len(in.Texts))
		for i, s := range in.Texts {
			inputs[i] = tok.Encode(s)
		}
	}
	total := 0
	for i, ids := range inputs {
		if len(ids) > cfg.NPositions {
			return resp, &RequestError{Code: CodeContextLength, Param: in.param(i),
				Message: fmt.Sprintf("%d tokens; the model's context holds %d", len(ids), cfg.NPositions)}
		}
		for j, t := range ids {
			if int(t) >= cfg.VocabSize {
				return resp, invalid(in.tokenParam(i, j), "token id %d outside the vocabulary [0, %d)", t, cfg.VocabSize)
			}
		}
		total += len(ids)
	}
	resp = EmbeddingsResponse{Object: "list", Model: l.Name, Data: make([]Embedding, 0, len(inputs)),
		Usage: EmbeddingsUsage{PromptTokens: total, TotalTokens: total}}
	for start := 0; start < len(inputs); start += embedSlice {
		if err := ctx.Err(); err != nil {
			return EmbeddingsResponse{}, err
		}
		vs, err := l.Model.EmbedAll(inputs[start:min(start+embedSlice, len(inputs))])
		if err != nil {
			return EmbeddingsResponse{}, err
		}
		for _, v := range vs {
			resp.Data = append(resp.Data, Embedding{Object: "embedding", Index: len(resp.Data), Embedding: EmbeddingVector{Values: v}})
		}
	}
	resp.SetEncoding(b.EncodingFormat)
	return resp, nil
}
