package generation

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

// tinyModel is builtin:tiny from a store of its own, with the tokenizer.
func tinyModel(t *testing.T) (*LoadedModel, *model.Tokenizer) {
	t.Helper()
	s := NewModelStore(nil)
	lm, err := s.Get("builtin:tiny")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lm.Engine.Close)
	tok, err := s.Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	return lm, tok
}

// Every form of OpenAI's input decodes, encodes back as it came, and a
// mixed or malformed list is refused naming the input.
func TestEmbeddingInputForms(t *testing.T) {
	for _, tc := range []struct {
		json   string
		texts  []string
		tokens [][]int32
	}{
		{`"hello"`, []string{"hello"}, nil},
		{`["a","b"]`, []string{"a", "b"}, nil},
		{`[1,2,3]`, nil, [][]int32{{1, 2, 3}}},
		{`[[1,2],[3]]`, nil, [][]int32{{1, 2}, {3}}},
	} {
		var in EmbeddingInput
		if err := json.Unmarshal([]byte(tc.json), &in); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if !slices.Equal(in.Texts, tc.texts) || !slices.EqualFunc(in.Tokens, tc.tokens, slices.Equal[[]int32]) {
			t.Fatalf("%s decoded as %+v", tc.json, in)
		}
		if b, err := json.Marshal(in); err != nil || string(b) != tc.json {
			t.Fatalf("%s encodes back as %s, %v", tc.json, b, err)
		}
	}
	for _, tc := range []struct{ json, param string }{
		{`["a",1]`, "input[1]"},
		{`[[1],"b"]`, "input[1]"},
		{`[1,null]`, "input[1]"},
		{`[[1],[2,null]]`, "input[1]"},
		{`[1,2.5]`, "input[1]"},
		{`{"text":"a"}`, "input"},
		{`true`, "input"},
	} {
		var in EmbeddingInput
		err := json.Unmarshal([]byte(tc.json), &in)
		var re *RequestError
		if !errors.As(err, &re) || re.Param != tc.param {
			t.Errorf("%s: %v; want an error naming %s", tc.json, err, tc.param)
		}
	}
}

func TestEmbeddingsBodyValidateNamesTheField(t *testing.T) {
	five := 5
	for _, tc := range []struct {
		body  string
		param string
	}{
		{`{"input":[]}`, "input"},
		{`{"input":["a",""]}`, "input[1]"},
		{`{"input":""}`, "input"},
		{`{"input":[[1],[]]}`, "input[1]"},
		{`{"input":[[1],[2,-3]]}`, "input[1][1]"},
		{`{"input":[4,-1]}`, "input[1]"},
		{`{"input":"a","encoding_format":"int8"}`, "encoding_format"},
		{`{"input":"a","dimensions":0}`, "dimensions"},
	} {
		var b EmbeddingsBody
		if err := json.Unmarshal([]byte(tc.body), &b); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		var re *RequestError
		if err := b.Validate(); !errors.As(err, &re) || re.Param != tc.param || re.Code != CodeInvalidRequest {
			t.Errorf("%s: %v; want an invalid_request naming %s", tc.body, err, tc.param)
		}
	}
	many := EmbeddingsBody{Input: EmbeddingInput{Texts: make([]string, MaxEmbeddingInputs+1)}}
	if err := many.Validate(); err == nil || !strings.Contains(err.Error(), "at most 2048") {
		t.Errorf("%d inputs: %v", MaxEmbeddingInputs+1, err)
	}
	ok := EmbeddingsBody{Input: EmbeddingInput{Texts: []string{"a"}}, Dimensions: &five, EncodingFormat: EncodingBase64}
	if err := ok.Validate(); err != nil {
		t.Errorf("a valid body: %v", err)
	}
}

// A vector encodes as numbers or as base64 of its little-endian float32s,
// and decodes from either to the same bits.
func TestEmbeddingVectorEncodings(t *testing.T) {
	v := []float32{1, -0.5, float32(math.Pi), 1e-30}
	b64, err := json.Marshal(EmbeddingVector{Values: v, Base64: true})
	if err != nil {
		t.Fatal(err)
	}
	// 1.0 is 00 00 80 3f little-endian.
	if !strings.HasPrefix(string(b64), `"AACAPw`) {
		t.Fatalf("base64 form %s", b64)
	}
	floats, _ := json.Marshal(EmbeddingVector{Values: v})
	for _, enc := range [][]byte{b64, floats} {
		var got EmbeddingVector
		if err := json.Unmarshal(enc, &got); err != nil || !slices.Equal(got.Values, v) || got.Base64 != (enc[0] == '"') {
			t.Fatalf("%s decodes as %+v, %v", enc, got, err)
		}
	}
}

// The model answers with one unit vector per input, the text's tokens
// counted, and refuses an input longer than its context by name.
func TestEmbeddingsOnTheModel(t *testing.T) {
	lm, tok := tinyModel(t)
	body := EmbeddingsBody{Input: EmbeddingInput{Texts: []string{"one text", "another, longer text"}}}
	resp, err := lm.Embeddings(context.Background(), tok, body)
	if err != nil {
		t.Fatal(err)
	}
	want := len(tok.Encode("one text")) + len(tok.Encode("another, longer text"))
	if resp.Object != "list" || resp.Model != "builtin:tiny" || len(resp.Data) != 2 || resp.Usage.PromptTokens != want || resp.Usage.TotalTokens != want {
		t.Fatalf("response %+v; want 2 vectors and %d tokens", resp, want)
	}
	for i, d := range resp.Data {
		var norm float64
		for _, x := range d.Embedding.Values {
			norm += float64(x) * float64(x)
		}
		if d.Object != "embedding" || d.Index != i || len(d.Embedding.Values) != 64 || math.Abs(norm-1) > 1e-5 || d.Embedding.Base64 {
			t.Fatalf("data[%d] = %s %d, %d values, |v|^2 %g", i, d.Object, d.Index, len(d.Embedding.Values), norm)
		}
	}
	// The same tokens given as ids embed the same.
	ids := EmbeddingsBody{Input: EmbeddingInput{Tokens: [][]int32{tok.Encode("one text")}, One: true}, EncodingFormat: EncodingBase64}
	byIDs, err := lm.Embeddings(context.Background(), tok, ids)
	if err != nil {
		t.Fatal(err)
	}
	if !byIDs.Data[0].Embedding.Base64 {
		t.Fatal("base64 asked for, floats given")
	}
	assertNear(t, byIDs.Data[0].Embedding.Values, resp.Data[0].Embedding.Values)

	long := EmbeddingsBody{Input: EmbeddingInput{Texts: []string{"fine", strings.Repeat("many words ", 200)}}}
	var re *RequestError
	if _, err := lm.Embeddings(context.Background(), tok, long); !errors.As(err, &re) || re.Code != CodeContextLength || re.Param != "input[1]" || !strings.Contains(re.Message, "context holds 256") {
		t.Fatalf("an input over the context: %v", err)
	}
	dims := 32
	if _, err := lm.Embeddings(context.Background(), tok, EmbeddingsBody{Input: body.Input, Dimensions: &dims}); !errors.As(err, &re) || re.Param != "dimensions" {
		t.Fatalf("dimensions 32 of 64: %v", err)
	}
	vocab := EmbeddingsBody{Input: EmbeddingInput{Tokens: [][]int32{{1}, {2, 50257}}}}
	if _, err := lm.Embeddings(context.Background(), tok, vocab); !errors.As(err, &re) || re.Param != "input[1][1]" {
		t.Fatalf("a token outside the vocabulary: %v", err)
	}
}

func assertNear(t *testing.T, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-5 {
			t.Fatalf("[%d] = %g, want %g", i, got[i], want[i])
		}
	}
}

// A batch file may hold embeddings lines beside completions: each is
// answered with the embeddings body, in order, its errors naming the
// line and the input; the line and its answer survive a JSON round trip
// (batch rows and chunk results are stored as JSON).
func TestGenerateLinesAnswersEmbeddingsLines(t *testing.T) {
	lm, tok := tinyModel(t)
	input := strings.Join([]string{
		`{"custom_id":"c1","method":"POST","url":"/v1/completions","body":{"prompt":"Hello","max_tokens":2,"temperature":0}}`,
		`{"custom_id":"e1","method":"POST","url":"/v1/embeddings","body":{"model":"builtin:tiny","input":["Hello","World"],"encoding_format":"base64"}}`,
		`{"custom_id":"e2","url":"/v1/embeddings","body":{"input":"` + strings.Repeat("many words ", 200) + `"}}`,
		`{"custom_id":"e3","url":"/v1/embeddings","body":{"input":"x","prompt":"y"}}`,
		`{"custom_id":"e4","url":"/v1/embeddings","body":{"input":[]}}`,
	}, "\n")
	lines, err := ReadRequestLines(strings.NewReader(input), 0)
	if err != nil {
		t.Fatal(err)
	}
	if e := lines[3].Err; e == nil || e.Code != "invalid_json" || !strings.Contains(e.Message, `unknown field "prompt"`) {
		t.Fatalf("line 4: %+v", e)
	}
	if e := lines[4].Err; e == nil || e.Code != "invalid_request" || !strings.HasPrefix(e.Message, "body.input: required") {
		t.Fatalf("line 5: %+v", e)
	}
	if m := lines[1].Request.Model(); m != "builtin:tiny" {
		t.Fatalf("line 2 names model %q", m)
	}
	// Rows are stored as JSON: the line comes back as it was.
	b, err := json.Marshal(lines[1].Request)
	if err != nil {
		t.Fatal(err)
	}
	var back RequestLine
	if err := json.Unmarshal(b, &back); err != nil || back.Embeddings == nil || !slices.Equal(back.Embeddings.Input.Texts, []string{"Hello", "World"}) {
		t.Fatalf("round trip of %s: %+v, %v", b, back, err)
	}
	out, err := GenerateLines(context.Background(), lm, tok, lines, 4, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := out[0].Response; r == nil || r.Embeddings != nil || len(r.Body.Choices) != 1 {
		t.Fatalf("completion line: %+v", out[0])
	}
	r := out[1].Response
	if r == nil || r.StatusCode != 200 || r.Embeddings == nil || len(r.Embeddings.Data) != 2 || out[1].CustomID != "e1" {
		t.Fatalf("embeddings line: %+v", out[1])
	}
	if e := out[2].Error; e == nil || e.Code != CodeContextLength || e.Line != 3 || !strings.HasPrefix(e.Message, "body.input: ") {
		t.Fatalf("over-long embeddings line: %+v", out[2].Error)
	}
	// The output line is OpenAI's: the body is the embeddings response,
	// vectors in base64; it reads back as written.
	b, err = json.Marshal(out[1])
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Response struct {
			Body struct {
				Object string `json:"object"`
				Data   []struct {
					Embedding string `json:"embedding"`
				} `json:"data"`
				Usage map[string]int `json:"usage"`
			} `json:"body"`
		} `json:"response"`
	}
	if err := json.Unmarshal(b, &raw); err != nil || raw.Response.Body.Object != "list" || len(raw.Response.Body.Data) != 2 ||
		len(raw.Response.Body.Data[0].Embedding) == 0 || len(raw.Response.Body.Usage) != 2 {
		t.Fatalf("output line %s: %v", b, err)
	}
	var again ResponseLine
	if err := json.Unmarshal(b, &again); err != nil || again.Response.Embeddings == nil ||
		!slices.Equal(again.Response.Embeddings.Data[1].Embedding.Values, r.Embeddings.Data[1].Embedding.Values) {
		t.Fatalf("output line does not read back: %v", err)
	}
}

// The custom encodings of lines leave <, > and & to the writer: the JSONL
// files, written without HTML escaping, keep a completion's text as it is.
func TestLinesKeepTextAsTheWriterChooses(t *testing.T) {
	line := ResponseLine{ID: "req-1", CustomID: "a<b>&c", Response: &Response{StatusCode: 200, Body: CompletionResponse{Choices: []Choice{{Text: "<b>&"}}}}}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(line); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"text":"<b>&"`) || !strings.Contains(b.String(), `"custom_id":"a<b>&c"`) {
		t.Fatalf("written as %s", b.String())
	}
	req := RequestLine{CustomID: "x", Body: CompletionsBody{Prompt: "<p>"}}
	if raw, err := json.Marshal(req); err != nil || !strings.Contains(string(raw), `"prompt":"\u003cp\u003e"`) {
		t.Fatalf("json.Marshal escapes as usual: %s %v", raw, err)
	}
}
