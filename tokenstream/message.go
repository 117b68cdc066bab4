// Package tokenstream is the token protocol of interactive generation:
// a worker streams one generation's messages (Message: start, tokens, then
// done or error) over core NATS on pipeline.GenTokensSubject, each sealed
// with the generation's stream key, and listens for the producer's sealed
// cancel on pipeline.GenCancelSubject. Writer is the worker's end (used by
// jobs' interactive kind); Reader is the producer's (it subscribes before
// the job is enqueued, checks every message with Decoder and cancels work
// nobody waits for), and cmd/producer turns its messages into OpenAI's
// answers. Both ends use pipeline.Bus. Format: docs/EVENTS.md; why the
// seal: docs/SECURITY.md, "The bus".
package tokenstream

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/pipeline"
)

// Types of Message.
const (
	TypeStart = "start" // seq 0: the worker has the job and listens for a cancel
	TypeToken = "token" // one generated token and the text it made final
	TypeDone  = "done"  // the last message of a finished generation
	TypeError = "error" // the last message of a failed generation
)

// Message is one message of an interactive generation's token stream
// (docs/EVENTS.md). Seq counts from 0 without gaps, so a reader can tell a
// lost message from a late one.
type Message struct {
	Seq  int    `json:"seq"`
	Type string `json:"type"`
	// Choice is, for a token, the choice it belongs to (0 to n-1); the
	// tokens of one choice come in order, those of different choices
	// interleave.
	Choice int `json:"choice,omitempty"`
	// Text is, for a token, the part of its choice's text this token made
	// final (maybe empty: text that could still become a stop sequence, or
	// part of a UTF-8 character, waits). A choice's token texts
	// concatenate to its whole text, which readers assemble from them.
	// When n = 1, done repeats it if the message stays within
	// pipeline.MaxEventBytes.
	Text  string `json:"text,omitempty"`
	Token *int32 `json:"token,omitempty"`
	// Logprobs is, for a token of a generation that asked for logprobs,
	// the token's log probability and its alternatives.
	Logprobs     *generation.LogprobEntry `json:"logprobs,omitempty"`
	FinishReason string                   `json:"finish_reason,omitempty"` // done: choice 0's stop, length or cancelled
	// Choices is, for done, how each choice ended, in choice order.
	Choices []Choice          `json:"choices,omitempty"`
	Model   string            `json:"model,omitempty"`  // done
	Usage   *generation.Usage `json:"usage,omitempty"`  // done: completion tokens of every choice
	Timing  *Timing           `json:"timing,omitempty"` // done
	Error   *Fault            `json:"error,omitempty"`  // error
}

// Choice is how one choice of a generation ended.
type Choice struct {
	Index            int    `json:"index"`
	FinishReason     string `json:"finish_reason"` // stop, length or cancelled
	CompletionTokens int    `json:"completion_tokens"`
}

// Timing reports where a generation's time went on the worker.
type Timing struct {
	// ModelFirstTokenMS is the model's own time to the first token:
	// composing and tokenising the prompt, prefill and the first sample;
	// queueing, waiting for the model's lock and transport are excluded.
	ModelFirstTokenMS float64 `json:"model_first_token_ms"`
	// TotalMS is the handler's time from start to the done message.
	TotalMS float64 `json:"total_ms"`
}

// Fault is the error of a failed generation.
type Fault struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Param is the request field at fault, when the request caused the
	// failure and one field did ("prompt[1]"; messages, for a chat too
	// long).
	Param string `json:"param,omitempty"`
}

// Error codes of Fault.
const (
	CodeModel   = "model_not_found"
	CodeContext = "context_length_exceeded"
	CodeTimeout = "timeout"
	CodeFailed  = "generation_failed"
	// CodeInvalid is a request only the worker can refuse (a token id
	// outside the model's own vocabulary).
	CodeInvalid = "invalid_request"
)

// Decoder checks a token stream as it is read: every message sealed with
// the generation's stream key, sequence numbers in order with no gap, known
// types, bounded messages, choices in range, and the fields a done (usage)
// or error (the error) message must carry.
type Decoder struct {
	// Key is the generation's stream key (jobs.InteractiveArgs.StreamKey).
	Key string
	// N is the generation's number of choices; 0 means 1.
	N    int
	next int
}

// Decode checks the seal of one message, parses it and checks that it is
// the next one. A message that fails the seal is an error wrapping
// pipeline.ErrForged: someone else on the bus wrote it, and the stream
// cannot be trusted after it.
func (r *Decoder) Decode(msg *nats.Msg) (Message, error) {
	var m Message
	if err := pipeline.CheckSeal(r.Key, msg); err != nil {
		return m, fmt.Errorf("token stream: message %d: %w", r.next, err)
	}
	data := msg.Data
	if len(data) > pipeline.MaxEventBytes {
		return m, fmt.Errorf("token stream: message of %d bytes, limit %d", len(data), pipeline.MaxEventBytes)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("token stream: %w", err)
	}
	switch {
	case m.Type != TypeStart && m.Type != TypeToken && m.Type != TypeDone && m.Type != TypeError:
		return m, fmt.Errorf("token stream: unknown message type %q", m.Type)
	case m.Type == TypeDone && m.Usage == nil:
		return m, fmt.Errorf("token stream: done message %d without usage", m.Seq)
	case m.Type == TypeError && m.Error == nil:
		return m, fmt.Errorf("token stream: error message %d without its error", m.Seq)
	case m.Choice < 0 || m.Choice >= max(r.N, 1):
		return m, fmt.Errorf("token stream: message %d names choice %d of %d", m.Seq, m.Choice, max(r.N, 1))
	}
	for i, c := range m.Choices {
		if c.Index != i || i >= max(r.N, 1) {
			return m, fmt.Errorf("token stream: done message %d: entry %d of choices is choice %d of %d", m.Seq, i, c.Index, max(r.N, 1))
		}
	}
	if m.Seq != r.next {
		return m, fmt.Errorf("token stream: message %d arrived where %d was due (lost or duplicated messages)", m.Seq, r.next)
	}
	r.next++
	return m, nil
}
