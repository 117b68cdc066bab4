package generation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
)

// MaxLineBytes bounds one request line of a batch file. Longer lines are
// refused with an error naming the line; they are never read whole.
const MaxLineBytes = limits.RequestLineBytes

// MaxPromptChars bounds the prompt text of one request before tokenisation.
const MaxPromptChars = limits.PromptBytes

// CompletionsURL is the endpoint of a request line whose body is a
// CompletionsBody (the default when a line names none); a line may also
// name ChatCompletionsURL or EmbeddingsURL.
const CompletionsURL = "/v1/completions"

// RequestLine is one line of an OpenAI Batch input file.
type RequestLine struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     CompletionsBody `json:"body"`
	// Chat is the body of a line whose url is ChatCompletionsURL; Body
	// then holds its sampling fields (ChatBody.Completions) and no prompt,
	// which the model's chat format writes from the messages. In JSON it
	// is the line's "body".
	Chat *ChatBody `json:"-"`
	// Embeddings is the body of a line whose URL is EmbeddingsURL; Body is
	// then zero. In JSON it is the line's "body".
	Embeddings *EmbeddingsBody `json:"-"`
}

// requestEnvelope is a request line with its body still raw: the body's
// type depends on the url.
type requestEnvelope struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// UnmarshalJSON implements json.Unmarshaler: the body is an EmbeddingsBody
// or a ChatBody by the url, a CompletionsBody otherwise. Unknown fields
// are refused, in the line and in its body.
func (r *RequestLine) UnmarshalJSON(b []byte) error {
	var env requestEnvelope
	err := decodeKnownFields(b, &env)
	// Kept even when the line fails (an unknown field does not stop the
	// decoder), so that the error can name the line's custom_id.
	*r = RequestLine{CustomID: env.CustomID, Method: env.Method, URL: env.URL}
	if err != nil {
		return err
	}
	if len(env.Body) == 0 {
		return nil
	}
	switch env.URL {
	case EmbeddingsURL:
		r.Embeddings = &EmbeddingsBody{}
		return decodeKnownFields(env.Body, r.Embeddings)
	case ChatCompletionsURL:
		return parseChatBody(env.Body, r)
	}
	return decodeKnownFields(env.Body, &r.Body)
}

// MarshalJSON implements json.Marshaler: the line as OpenAI writes it,
// with Chat or Embeddings as the body when set.
func (r RequestLine) MarshalJSON() ([]byte, error) {
	env := struct {
		CustomID string `json:"custom_id"`
		Method   string `json:"method"`
		URL      string `json:"url"`
		Body     any    `json:"body"`
	}{r.CustomID, r.Method, r.URL, r.Body}
	switch {
	case r.Embeddings != nil:
		env.Body = r.Embeddings
	case r.Chat != nil:
		env.Body = r.Chat
	}
	return marshalAsIs(env)
}

// marshalAsIs is json.Marshal without escaping <, > and &: a MarshalJSON
// that uses it leaves that choice to the encoder it is called from (the
// JSONL writers keep them as they are).
func marshalAsIs(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Model is the model the line's body names ("" for none).
func (r RequestLine) Model() string {
	if r.Embeddings != nil {
		return r.Embeddings.Model
	}
	return r.Body.Model
}

// decodeKnownFields decodes one JSON value into v, refusing unknown fields.
func decodeKnownFields(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// CompletionsBody is the subset of the OpenAI /v1/completions body that the
// engine understands. Unknown fields are refused so that a typo such as
// "temprature" is an error rather than a silently ignored knob.
type CompletionsBody struct {
	Model             string      `json:"model,omitempty"`
	Prompt            string      `json:"prompt"`
	MaxTokens         *int        `json:"max_tokens,omitempty"`
	Temperature       *float32    `json:"temperature,omitempty"`
	TopP              *float32    `json:"top_p,omitempty"`
	TopK              *int        `json:"top_k,omitempty"`
	MinP              *float32    `json:"min_p,omitempty"`
	PresencePenalty   *float32    `json:"presence_penalty,omitempty"`
	FrequencyPenalty  *float32    `json:"frequency_penalty,omitempty"`
	RepetitionPenalty *float32    `json:"repetition_penalty,omitempty"`
	Seed              *int64      `json:"seed,omitempty"`
	Stop              StopStrings `json:"stop,omitempty"`
	N                 *int        `json:"n,omitempty"`
	Logprobs          *int        `json:"logprobs,omitempty"`
	User              string      `json:"user,omitempty"`
}

// StopStrings accepts the OpenAI forms of "stop": a string or a list.
type StopStrings []string

// UnmarshalJSON implements json.Unmarshaler.
func (s *StopStrings) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = StopStrings{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop: want a string or a list of strings")
	}
	*s = many
	return nil
}

// DefaultMaxTokens is used when a request names none (OpenAI uses 16).
const DefaultMaxTokens = 16

// Params turns the body into validated sampling parameters. A field sent
// as 0 where SamplingParams reads 0 as "the default" (max_tokens,
// repetition_penalty, n) is refused as out of range rather than taken for
// the default. top_p 0, which OpenAI takes, keeps the smallest set of
// tokens whose mass reaches 0: the most likely token alone, so it samples
// as top_k 1.
func (b CompletionsBody) Params() (model.SamplingParams, error) {
	switch {
	case b.MaxTokens != nil && *b.MaxTokens == 0:
		return model.SamplingParams{}, fmt.Errorf("body: max_tokens: 0 out of range [1, %d]", model.MaxTokensLimit)
	case b.RepetitionPenalty != nil && *b.RepetitionPenalty == 0:
		return model.SamplingParams{}, errors.New("body: repetition_penalty: 0 must be a finite number > 0 (1 is off)")
	case b.N != nil && *b.N == 0:
		return model.SamplingParams{}, fmt.Errorf("body: n: 0 out of range [1, %d]", model.MaxChoices)
	}
	p := model.SamplingParams{
		MaxTokens:         DefaultMaxTokens,
		Temperature:       1,
		TopP:              1,
		RepetitionPenalty: 1,
		N:                 1,
	}
	if b.MaxTokens != nil {
		p.MaxTokens = *b.MaxTokens
	}
	if b.Temperature != nil {
		p.Temperature = *b.Temperature
	}
	if b.TopP != nil {
		p.TopP = *b.TopP
	}
	if b.TopK != nil {
		p.TopK = *b.TopK
	}
	if b.TopP != nil && *b.TopP == 0 {
		p.TopP, p.TopK = 1, 1
	}
	if b.MinP != nil {
		p.MinP = *b.MinP
	}
	if b.PresencePenalty != nil {
		p.PresencePenalty = *b.PresencePenalty
	}
	if b.FrequencyPenalty != nil {
		p.FrequencyPenalty = *b.FrequencyPenalty
	}
	if b.RepetitionPenalty != nil {
		p.RepetitionPenalty = *b.RepetitionPenalty
	}
	if b.Seed != nil {
		p.Seed = b.Seed
	}
	if b.N != nil {
		p.N = *b.N
	}
	if b.Logprobs != nil {
		p.Logprobs = *b.Logprobs
	}
	p.Stop = append([]string(nil), b.Stop...)
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("body: %w", err)
	}
	return p, nil
}

// LineError is the error object of an output line, pointing back at the input.
type LineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Line    int    `json:"line"`
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s: %s", e.Line, e.Code, e.Message) }

// ParseRequestLine decodes and checks one input line. lineNo is 1-based and
// only used in the error. A line that fails returns a *LineError.
func ParseRequestLine(raw []byte, lineNo int) (RequestLine, error) {
	var r RequestLine
	if len(raw) > MaxLineBytes {
		return r, &LineError{Code: "line_too_long", Message: fmt.Sprintf("line is %d bytes; the limit is %d", len(raw), MaxLineBytes), Line: lineNo}
	}
	var line struct {
		CustomID string          `json:"custom_id"`
		Method   string          `json:"method"`
		URL      string          `json:"url"`
		Body     json.RawMessage `json:"body"`
	}
	if err := decodeLineStrict(raw, &line); err != nil {
		return r, &LineError{Code: "invalid_json", Message: err.Error(), Line: lineNo}
	}
	r.CustomID, r.Method, r.URL = line.CustomID, line.Method, line.URL
	bad := func(field, msg string) (RequestLine, error) {
		return r, &LineError{Code: "invalid_request", Message: field + ": " + msg, Line: lineNo}
	}
	if r.URL == ChatCompletionsURL {
		if err := parseChatBody(line.Body, &r); err != nil {
			var fe *ChatFieldError
			if errors.As(err, &fe) {
				return bad("body."+fe.Param, fe.Msg)
			}
			return r, &LineError{Code: "invalid_json", Message: err.Error(), Line: lineNo}
		}
	} else if len(line.Body) > 0 {
		var body any = &r.Body
		if r.URL == EmbeddingsURL {
			r.Embeddings = &EmbeddingsBody{}
			body = r.Embeddings
		}
		if err := decodeLineStrict(line.Body, body); err != nil {
			return r, &LineError{Code: "invalid_json", Message: err.Error(), Line: lineNo}
		}
	}
	if err := CheckIDText(raw, "custom_id", r.CustomID); err != nil {
		return r, &LineError{Code: "invalid_request", Message: err.Error(), Line: lineNo}
	}
	switch {
	case strings.TrimSpace(r.CustomID) == "":
		return bad("custom_id", "required")
	case len(r.CustomID) > limits.CustomIDLen:
		return bad("custom_id", fmt.Sprintf("longer than %d bytes", limits.CustomIDLen))
	case r.Method != "" && r.Method != "POST":
		return bad("method", fmt.Sprintf("%q is not supported; use POST", r.Method))
	case r.URL != "" && r.URL != CompletionsURL && r.URL != ChatCompletionsURL && r.URL != EmbeddingsURL:
		return bad("url", fmt.Sprintf("%q is not supported; use %s, %s or %s", r.URL, CompletionsURL, ChatCompletionsURL, EmbeddingsURL))
	}
	if r.URL == EmbeddingsURL {
		if r.Embeddings == nil {
			r.Embeddings = &EmbeddingsBody{}
		}
		if err := r.Embeddings.Validate(); err != nil {
			var re *RequestError
			if errors.As(err, &re) {
				return bad("body."+re.Param, re.Message)
			}
			return bad("body", err.Error())
		}
		return r, nil
	}
	switch {
	case r.Chat != nil:
	case r.Body.Prompt == "":
		return bad("body.prompt", "required (a non-empty string)")
	case len(r.Body.Prompt) > MaxPromptChars:
		return bad("body.prompt", fmt.Sprintf("longer than %d bytes", MaxPromptChars))
	}
	if _, err := r.Body.Params(); err != nil {
		return bad("body", strings.TrimPrefix(err.Error(), "body: "))
	}
	return r, nil
}

// decodeLineStrict decodes one JSON value from raw into v, refusing
// unknown fields and trailing data.
func decodeLineStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// CheckIDText refuses an id whose text on the JSON line raw is not valid
// UTF-8: an invalid byte, or a \u escape of a lone surrogate. encoding/json
// turns both into U+FFFD without a word, so two different ids would become
// one and collide as duplicates. decoded is the id as decoded from field;
// the line is looked at again only when decoded holds U+FFFD, the mark of
// such a replacement.
func CheckIDText(raw []byte, field, decoded string) error {
	if !strings.ContainsRune(decoded, utf8.RuneError) {
		return nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return nil // not an object: the decoder has said so already
	}
	lit, ok := fields[field]
	if !ok { // encoding/json matches struct fields without regard to case
		for k, v := range fields {
			if strings.EqualFold(k, field) {
				lit = v
			}
		}
	}
	if !validJSONStringText(lit) {
		return fmt.Errorf("%s: not valid UTF-8 (an invalid byte or a lone surrogate escape)", field)
	}
	return nil
}

// validJSONStringText reports whether the JSON text lit holds only valid
// UTF-8 and no \u escape of an unpaired surrogate.
func validJSONStringText(lit []byte) bool {
	if !utf8.Valid(lit) {
		return false
	}
	hex4 := func(i int) (rune, bool) { // the 4 hex digits at lit[i:]
		if i+4 > len(lit) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(lit[i:i+4]), 16, 32)
		return rune(v), err == nil
	}
	for i := 0; i < len(lit); i++ {
		if lit[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(lit) || lit[i] != 'u' {
			continue
		}
		r, ok := hex4(i + 1)
		if !ok || !utf16.IsSurrogate(r) {
			continue
		}
		if r >= 0xDC00 { // a low surrogate first
			return false
		}
		if i+6 < len(lit) && lit[i+5] == '\\' && lit[i+6] == 'u' {
			if lo, ok := hex4(i + 7); ok && lo >= 0xDC00 && lo < 0xE000 {
				i += 10 // the pair
				continue
			}
		}
		return false
	}
	return true
}

// ResponseLine is one line of an output file, in OpenAI's batch output
// shape (Error also names the input line, an extension).
type ResponseLine struct {
	ID       string     `json:"id"`
	CustomID string     `json:"custom_id"`
	Response *Response  `json:"response"`
	Error    *LineError `json:"error"`
}

// Response wraps the completions body with its HTTP-like status and the
// id of the request, as OpenAI's batch output does; a chat line's body is
// Chat (a chat.completion) instead.
type Response struct {
	StatusCode int                `json:"status_code"`
	RequestID  string             `json:"request_id"`
	Body       CompletionResponse `json:"body"`
	Chat       *ChatCompletion    `json:"-"`
	// Embeddings is the body of an embeddings line's response; Body is
	// then zero. In JSON it is the response's "body".
	Embeddings *EmbeddingsResponse `json:"-"`
}

// MarshalJSON implements json.Marshaler: the body is the chat completion
// of a chat line, the embeddings of an embeddings line, else the
// completion.
func (r Response) MarshalJSON() ([]byte, error) {
	env := struct {
		StatusCode int    `json:"status_code"`
		RequestID  string `json:"request_id"`
		Body       any    `json:"body"`
	}{r.StatusCode, r.RequestID, r.Body}
	switch {
	case r.Chat != nil:
		env.Body = r.Chat
	case r.Embeddings != nil:
		env.Body = r.Embeddings
	}
	return marshalAsIs(env)
}

// UnmarshalJSON implements json.Unmarshaler: a body whose object is
// "chat.completion" goes to Chat, "list" (embeddings) to Embeddings, any
// other to Body.
func (r *Response) UnmarshalJSON(b []byte) error {
	var env struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return err
	}
	*r = Response{StatusCode: env.StatusCode, RequestID: env.RequestID}
	if len(env.Body) == 0 {
		return nil
	}
	var kind struct {
		Object string `json:"object"`
	}
	if err := json.Unmarshal(env.Body, &kind); err != nil {
		return err
	}
	switch kind.Object {
	case "chat.completion":
		r.Chat = new(ChatCompletion)
		return json.Unmarshal(env.Body, r.Chat)
	case "list":
		r.Embeddings = &EmbeddingsResponse{}
		return json.Unmarshal(env.Body, r.Embeddings)
	}
	return json.Unmarshal(env.Body, &r.Body)
}

// CompletionResponse is the /v1/completions response body.
type CompletionResponse struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []Choice `json:"choices"`
	Usage   Usage    `json:"usage"`
}

// Choice is one generated continuation.
type Choice struct {
	Index        int             `json:"index"`
	Text         string          `json:"text"`
	FinishReason string          `json:"finish_reason"`
	Logprobs     *ChoiceLogprobs `json:"logprobs"`
}

// ChoiceLogprobs mirrors the legacy completions logprobs object: each list
// holds one entry per generated token (end-of-text included).
type ChoiceLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs,omitempty"`
	// TextOffset is where each token's text starts in the choice's text:
	// the bytes of the token texts before it.
	TextOffset []int `json:"text_offset"`
}

// LogprobEntry is one generated token's log probabilities with texts for
// its ids: what ChoiceLogprobs takes per token, and what an interactive
// token stream carries for each token (tokenstream.Message).
type LogprobEntry struct {
	// Text is the token's text; "<|endoftext|>" for the end of text.
	Text    string  `json:"text"`
	Logprob float32 `json:"logprob"`
	// Top are the most likely tokens of the raw distribution, most likely
	// first (Params.Logprobs of them).
	Top []LogprobAlt `json:"top"`
}

// LogprobAlt is one alternative of a LogprobEntry.
type LogprobAlt struct {
	Token   int32   `json:"token"`
	Text    string  `json:"text"`
	Logprob float32 `json:"logprob"`
}

// NewLogprobEntry renders t with tok's texts.
func NewLogprobEntry(tok *model.Tokenizer, t model.TokenLogprobs) LogprobEntry {
	e := LogprobEntry{Text: t.Text, Logprob: t.Logprob, Top: make([]LogprobAlt, len(t.Top))}
	if t.Token == tok.EOT() {
		e.Text = tok.Decode([]int32{t.Token})
	}
	for i, alt := range t.Top {
		e.Top[i] = LogprobAlt{Token: alt.Token, Text: tok.Decode([]int32{alt.Token}), Logprob: alt.Logprob}
	}
	return e
}

// Append adds e as the choice's next token; its text starts where the
// previous token's ends. Alternatives whose texts are equal keep the most
// likely one's log probability.
func (lp *ChoiceLogprobs) Append(e LogprobEntry) {
	at := 0
	if n := len(lp.Tokens); n > 0 {
		at = lp.TextOffset[n-1] + len(lp.Tokens[n-1])
	}
	top := make(map[string]float32, len(e.Top))
	for _, alt := range e.Top {
		if _, seen := top[alt.Text]; !seen {
			top[alt.Text] = alt.Logprob
		}
	}
	lp.Tokens = append(lp.Tokens, e.Text)
	lp.TokenLogprobs = append(lp.TokenLogprobs, e.Logprob)
	lp.TopLogprobs = append(lp.TopLogprobs, top)
	lp.TextOffset = append(lp.TextOffset, at)
}

// Last is lp's last token alone, at its offset: what one chunk of a
// streamed completion carries. It is nil when lp holds no token.
func (lp *ChoiceLogprobs) Last() *ChoiceLogprobs {
	n := len(lp.Tokens)
	if n == 0 {
		return nil
	}
	return &ChoiceLogprobs{Tokens: lp.Tokens[n-1:], TokenLogprobs: lp.TokenLogprobs[n-1:], TopLogprobs: lp.TopLogprobs[n-1:], TextOffset: lp.TextOffset[n-1:]}
}

// Usage counts tokens the way OpenAI bills them.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}
