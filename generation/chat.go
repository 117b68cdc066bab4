package generation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/model"
)

// ChatCompletionsURL is the endpoint of chat requests, live and in batch
// lines.
const ChatCompletionsURL = "/v1/chat/completions"

// ChatFormatFile is the file beside a model directory's config.json that
// holds the model's chat format (ChatFormat as JSON). A model without one
// uses DefaultChatFormat. Hugging Face's chat_template (Jinja, in
// tokenizer_config.json) is not read.
const ChatFormatFile = "chat_format.json"

// Chat roles a message may have.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// ChatFormat is how a model's chat transcript is written: each message is
// its role's prefix, its content and Separator; the prompt ends with the
// Assistant prefix, which the model continues; Stop ends the reply where
// the model starts the next turn (the model's end-of-text token ends it
// too). In chat_format.json the fields are named as in JSON below; a
// field left out keeps DefaultChatFormat's value.
type ChatFormat struct {
	System    string `json:"system"`
	User      string `json:"user"`
	Assistant string `json:"assistant"`
	Separator string `json:"separator"`
	Stop      string `json:"stop"`
}

// DefaultChatFormat is the chat format of GPT-2-style models that carry
// none: the transcript sessions write (loop.Transcript), with a "System: "
// line for system messages:
//
//	System: You are brief.
//	User: Hello
//	Assistant: Hi there.
//	User: And now?
//	Assistant:
//
// Replies are written back as they were generated (usually beginning with
// a space), so a client that sends a reply back as it came gives the model
// the same tokens; the reply stops at "\nUser:".
var DefaultChatFormat = ChatFormat{System: "System: ", User: loop.UserLabel + " ", Assistant: loop.ReplyLabel, Separator: "\n", Stop: loop.TurnStop}

// maxChatFormatBytes bounds chat_format.json and each of its fields.
const maxChatFormatBytes = 4096

// ReadChatFormat reads a chat format file: a JSON object of ChatFormat's
// fields, unknown fields refused; fields left out keep the default.
func ReadChatFormat(r io.Reader) (ChatFormat, error) {
	f := DefaultChatFormat
	b, err := io.ReadAll(io.LimitReader(r, maxChatFormatBytes+1))
	if err != nil {
		return f, err
	}
	if len(b) > maxChatFormatBytes {
		return f, fmt.Errorf("%s: over %d bytes", ChatFormatFile, maxChatFormatBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, fmt.Errorf("%s: %w", ChatFormatFile, err)
	}
	if f.User == "" || f.Assistant == "" {
		return f, fmt.Errorf("%s: user and assistant: required, non-empty (the prefixes that open those turns)", ChatFormatFile)
	}
	for name, v := range map[string]string{"system": f.System, "user": f.User, "assistant": f.Assistant, "separator": f.Separator, "stop": f.Stop} {
		if !utf8.ValidString(v) {
			return f, fmt.Errorf("%s: %s: not valid UTF-8", ChatFormatFile, name)
		}
	}
	if len(f.Stop) > model.MaxStopBytes {
		return f, fmt.Errorf("%s: stop: %d bytes, at most %d", ChatFormatFile, len(f.Stop), model.MaxStopBytes)
	}
	return f, nil
}

// Render writes msgs (checked by ValidateChatMessages) as the prompt the
// model continues: each message with its role's prefix and the separator,
// then the open assistant turn.
func (f ChatFormat) Render(msgs []ChatMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		switch m.Role {
		case RoleSystem:
			b.WriteString(f.System)
		case RoleUser:
			b.WriteString(f.User)
		default:
			b.WriteString(f.Assistant)
		}
		b.WriteString(string(m.Content))
		b.WriteString(f.Separator)
	}
	b.WriteString(f.Assistant)
	return b.String()
}

// TrimChat chooses the messages a chat prompt is written from so that it
// takes at most budget tokens (tokens counts the prompt of some
// messages): all of msgs when they fit, and otherwise msgs less their
// oldest messages, as few as make it fit. System messages are never left
// out, nor the last user message (the last message, when none is the
// user's) or any message after it. When even those are over budget, they
// are what it returns, and the caller decides. dropped is how many
// messages were left out.
func TrimChat(msgs []ChatMessage, budget int, tokens func([]ChatMessage) int) (kept []ChatMessage, dropped int) {
	if tokens(msgs) <= budget {
		return msgs, 0
	}
	last := len(msgs) - 1
	for i := last; i >= 0; i-- {
		if msgs[i].Role == RoleUser {
			last = i
			break
		}
	}
	var droppable []int // oldest first
	for i, m := range msgs[:max(last, 0)] {
		if m.Role != RoleSystem {
			droppable = append(droppable, i)
		}
	}
	without := func(d int) []ChatMessage { // msgs less the d oldest droppable
		out := make([]ChatMessage, 0, len(msgs)-d)
		j := 0
		for i, m := range msgs {
			if j < d && i == droppable[j] {
				j++
				continue
			}
			out = append(out, m)
		}
		return out
	}
	// Fewer messages write a shorter prompt, so the fewest to leave out is
	// found by bisection: leaving out lo is too few; hi, if any is, enough.
	lo, hi := 0, len(droppable)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if tokens(without(mid)) <= budget {
			hi = mid
		} else {
			lo = mid
		}
	}
	return without(hi), hi
}

// AddStop adds the format's turn boundary to p's stop sequences.
func (f ChatFormat) AddStop(p *model.SamplingParams) {
	if f.Stop != "" && len(p.Stop) < model.MaxStopSequences {
		p.Stop = append(p.Stop, f.Stop)
	}
}

// ChatMessages are a chat request's messages. Each is read on its own, so
// that an error names it: an unsupported role (messages[1].role), a field
// other than role and content, a content part that is not text; errors
// are *ChatFieldError.
type ChatMessages []ChatMessage

// UnmarshalJSON implements json.Unmarshaler.
func (ms *ChatMessages) UnmarshalJSON(b []byte) error {
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return &ChatFieldError{"messages", "want a list of messages"}
	}
	out := make(ChatMessages, len(raws))
	for i, raw := range raws {
		at := fmt.Sprintf("messages[%d]", i)
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			return &ChatFieldError{at, "want an object with role and content"}
		}
		if err := json.Unmarshal(fields["role"], &out[i].Role); err != nil || !validRole(out[i].Role) {
			return &ChatFieldError{at + ".role", fmt.Sprintf("%.32s is not supported (system, user or assistant)", fields["role"])}
		}
		for k := range fields {
			if k != "role" && k != "content" {
				return &ChatFieldError{at + "." + k, "not supported (a message has role and content)"}
			}
		}
		if c, ok := fields["content"]; ok {
			if err := out[i].Content.UnmarshalJSON(c); err != nil {
				var fe *ChatFieldError
				if errors.As(err, &fe) {
					return &ChatFieldError{at + "." + fe.Param, fe.Msg}
				}
				return &ChatFieldError{at + ".content", err.Error()}
			}
		}
	}
	*ms = out
	return nil
}

func validRole(r string) bool { return r == RoleSystem || r == RoleUser || r == RoleAssistant }

// ChatMessage is one message of a chat request; a reply's message in the
// answer.
type ChatMessage struct {
	Role    string      `json:"role"`
	Content ChatContent `json:"content"`
}

// ChatContent is a message's content: a string, or (in requests) a list
// of {"type":"text","text":...} parts, which are joined.
type ChatContent string

// ChatFieldError is an error in a chat request that names the field
// (OpenAI's param), such as messages[1].role.
type ChatFieldError struct {
	Param string
	Msg   string
}

func (e *ChatFieldError) Error() string { return e.Param + ": " + e.Msg }

// UnmarshalJSON implements json.Unmarshaler.
func (c *ChatContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = ChatContent(s)
		return nil
	}
	if string(b) == "null" {
		*c = ""
		return nil
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return &ChatFieldError{"content", "want a string or a list of text parts"}
	}
	var s strings.Builder
	for i, raw := range parts {
		text, err := textPart(raw)
		if err != nil {
			return &ChatFieldError{fmt.Sprintf("content[%d]%s", i, err.Param), err.Msg}
		}
		s.WriteString(text)
	}
	*c = ChatContent(s.String())
	return nil
}

// textPart is the text of one content part, {"type":"text","text":...};
// an error's Param is the part's field at fault (".type", ".text"), or ""
// for the part itself.
func textPart(raw json.RawMessage) (string, *ChatFieldError) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return "", &ChatFieldError{"", `want an object {"type":"text","text":...}`}
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if k != "type" && k != "text" {
			return "", &ChatFieldError{"." + k, "not supported (a text part has type and text)"}
		}
	}
	var typ, text string
	t, ok := fields["type"]
	switch {
	case !ok:
		return "", &ChatFieldError{".type", `required ("text")`}
	case json.Unmarshal(t, &typ) != nil || typ != "text":
		return "", &ChatFieldError{".type", fmt.Sprintf("%.32s is not supported; only text parts are", t)}
	}
	if t, ok := fields["text"]; !ok || json.Unmarshal(t, &text) != nil || t[0] != '"' {
		return "", &ChatFieldError{".text", "required, a string"}
	}
	return text, nil
}

// ValidateChatMessages checks a chat request's messages: at least one;
// roles system, user and assistant; content valid UTF-8, all of it at
// most maxBytes. Errors are *ChatFieldError.
func ValidateChatMessages(msgs []ChatMessage, maxBytes int) error {
	if len(msgs) == 0 {
		return &ChatFieldError{"messages", "required: at least one message"}
	}
	total := 0
	for i, m := range msgs {
		if !validRole(m.Role) {
			return &ChatFieldError{fmt.Sprintf("messages[%d].role", i), fmt.Sprintf("%.32q is not supported (system, user or assistant)", m.Role)}
		}
		if !utf8.ValidString(string(m.Content)) {
			return &ChatFieldError{fmt.Sprintf("messages[%d].content", i), "not valid UTF-8"}
		}
		total += len(m.Content)
	}
	if total > maxBytes {
		return &ChatFieldError{"messages", fmt.Sprintf("%d bytes of content, at most %d", total, maxBytes)}
	}
	return nil
}

// ChatBody is the subset of OpenAI's /v1/chat/completions body the engine
// understands; unknown fields are refused by the decoders that read it.
type ChatBody struct {
	Model               string       `json:"model"`
	Messages            ChatMessages `json:"messages"`
	MaxTokens           *int         `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int         `json:"max_completion_tokens,omitempty"`
	Temperature         *float32     `json:"temperature,omitempty"`
	TopP                *float32     `json:"top_p,omitempty"`
	PresencePenalty     *float32     `json:"presence_penalty,omitempty"`
	FrequencyPenalty    *float32     `json:"frequency_penalty,omitempty"`
	Seed                *int64       `json:"seed,omitempty"`
	Stop                StopStrings  `json:"stop,omitempty"`
	N                   *int         `json:"n,omitempty"`
	Logprobs            bool         `json:"logprobs,omitempty"`
	TopLogprobs         *int         `json:"top_logprobs,omitempty"`
	User                string       `json:"user,omitempty"`
}

// MaxTopLogprobs bounds top_logprobs, as OpenAI does.
const MaxTopLogprobs = 20

// Completions is the completions body of the same generation, its prompt
// left for the model's chat format to write: max_completion_tokens or
// max_tokens (they must agree when both are given), logprobs with
// top_logprobs alternatives (the engine computes at least one, which the
// answer leaves out when top_logprobs is 0). One stop sequence is kept
// for the turn boundary. Errors are *ChatFieldError.
func (b ChatBody) Completions() (CompletionsBody, error) {
	c := CompletionsBody{Model: b.Model, MaxTokens: b.MaxCompletionTokens, Temperature: b.Temperature, TopP: b.TopP,
		PresencePenalty: b.PresencePenalty, FrequencyPenalty: b.FrequencyPenalty, Seed: b.Seed, Stop: b.Stop, N: b.N, User: b.User}
	switch {
	case b.MaxTokens != nil && b.MaxCompletionTokens != nil && *b.MaxTokens != *b.MaxCompletionTokens:
		return c, &ChatFieldError{"max_tokens", fmt.Sprintf("%d differs from max_completion_tokens %d; give one", *b.MaxTokens, *b.MaxCompletionTokens)}
	case b.TopLogprobs != nil && (*b.TopLogprobs < 0 || *b.TopLogprobs > MaxTopLogprobs):
		return c, &ChatFieldError{"top_logprobs", fmt.Sprintf("%d out of range [0, %d]", *b.TopLogprobs, MaxTopLogprobs)}
	case b.TopLogprobs != nil && !b.Logprobs:
		return c, &ChatFieldError{"top_logprobs", "needs logprobs: true"}
	case len(b.Stop) >= model.MaxStopSequences:
		return c, &ChatFieldError{"stop", fmt.Sprintf("%d sequences; a chat takes at most %d (one more is the turn boundary)", len(b.Stop), model.MaxStopSequences-1)}
	}
	if c.MaxTokens == nil {
		c.MaxTokens = b.MaxTokens
	}
	if b.Logprobs {
		k := 1
		if b.TopLogprobs != nil {
			k = max(*b.TopLogprobs, 1)
		}
		c.Logprobs = &k
	}
	return c, nil
}

// TopLogprobsOf is the number of alternatives a chat answer shows.
func (b ChatBody) TopLogprobsOf() int {
	if b.TopLogprobs == nil {
		return 0
	}
	return *b.TopLogprobs
}

// ChatCompletion is the /v1/chat/completions response body.
type ChatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // chat.completion
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []ChatChoice `json:"choices"`
	Usage   Usage        `json:"usage"`
}

// ChatChoice is one reply of a chat completion.
type ChatChoice struct {
	Index        int           `json:"index"`
	Message      ChatMessage   `json:"message"`
	FinishReason string        `json:"finish_reason"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
}

// ChatLogprobs is a chat choice's logprobs: one entry per generated token.
type ChatLogprobs struct {
	Content []ChatTokenLogprob `json:"content"`
}

// ChatTokenLogprob is one token's log probability in the chat shape, with
// its top alternatives.
type ChatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float32          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []ChatTopLogprob `json:"top_logprobs"`
}

// ChatTopLogprob is one alternative of a ChatTokenLogprob.
type ChatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// NewChatTokenLogprob renders e in the chat shape with at most k
// alternatives.
func NewChatTokenLogprob(e LogprobEntry, k int) ChatTokenLogprob {
	out := ChatTokenLogprob{Token: e.Text, Logprob: e.Logprob, Bytes: textBytes(e.Text), TopLogprobs: []ChatTopLogprob{}}
	for _, alt := range e.Top[:min(k, len(e.Top))] {
		out.TopLogprobs = append(out.TopLogprobs, ChatTopLogprob{Token: alt.Text, Logprob: alt.Logprob, Bytes: textBytes(alt.Text)})
	}
	return out
}

func textBytes(s string) []int {
	b := make([]int, len(s))
	for i := range len(s) {
		b[i] = int(s[i])
	}
	return b
}

// parseChatBody decodes the body of a batch line with ChatCompletionsURL
// into r: r.Chat, and r.Body with its sampling fields. Field errors are
// *ChatFieldError.
func parseChatBody(raw []byte, r *RequestLine) error {
	var b ChatBody
	if err := decodeLineStrict(raw, &b); err != nil {
		return err
	}
	body, err := b.Completions()
	if err != nil {
		return err
	}
	if err := ValidateChatMessages(b.Messages, MaxPromptChars); err != nil {
		return err
	}
	r.Chat, r.Body = &b, body
	return nil
}

// prompt is the text the model continues for line il: its prompt, or a
// chat line's messages in the model's chat format; a chat line's params
// get the format's turn boundary as a stop sequence.
func linePrompt(lm *LoadedModel, req RequestLine, params *model.SamplingParams) string {
	if req.Chat == nil {
		return req.Body.Prompt
	}
	lm.Chat.AddStop(params)
	return lm.Chat.Render(req.Chat.Messages)
}

// chatResponse is the chat.completion body of a batch chat line.
func chatResponse(id, modelName string, chat *ChatBody, tok *model.Tokenizer, comps []model.Completion) *ChatCompletion {
	body := &ChatCompletion{ID: id, Object: "chat.completion", Created: time.Now().Unix(), Model: modelName}
	for i, c := range comps {
		ch := ChatChoice{Index: i, FinishReason: c.FinishReason, Message: ChatMessage{Role: RoleAssistant, Content: ChatContent(c.Text)}}
		if chat.Logprobs {
			ch.Logprobs = &ChatLogprobs{Content: []ChatTokenLogprob{}}
			for _, t := range c.Logprobs {
				ch.Logprobs.Content = append(ch.Logprobs.Content, NewChatTokenLogprob(NewLogprobEntry(tok, t), chat.TopLogprobsOf()))
			}
		}
		body.Choices = append(body.Choices, ch)
		body.Usage.CompletionTokens += c.CompletionTokens
		body.Usage.PromptTokens = c.PromptTokens
	}
	body.Usage.TotalTokens = body.Usage.PromptTokens + body.Usage.CompletionTokens
	return body
}
