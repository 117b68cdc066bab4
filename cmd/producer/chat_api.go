package main

import (
	"net/http"
	"strings"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

// chatRequest is the body of POST /v1/chat/completions: OpenAI's fields
// (generation.ChatBody) plus Tandem's template and topic, which name the
// recommender items the conversation came from, for feedback on the
// reply, and session and replaces as on /v1/completions: the messages
// stay the whole conversation the model sees (with the session's
// instructions), and the session records each reply as a turn (the last
// user message and the reply), in the place of the turn replaces names.
type chatRequest struct {
	generation.ChatBody
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
	Session       string         `json:"session,omitempty"`
	Template      string         `json:"template,omitempty"`
	Topic         string         `json:"topic,omitempty"`
	Replaces      string         `json:"replaces,omitempty"`
}

// createChat serves POST /v1/chat/completions: the messages become an
// interactive generation (jobs.InteractiveArgs.Messages) that the worker
// writes in the model's chat format, the oldest left out when they do not
// fit the model's context (generation.TrimChat), and stops at the turn
// boundary; a session adds its instructions and records the turn; it
// streams and is cancelled, recorded (under its chatcmpl- id, so feedback
// names it) and answered as a completion is (completionsAPI.run), in the
// chat shapes.
func (c *completionsAPI) createChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decodeStrict(w, r, maxCompletionBody, &req) {
		return
	}
	user, ok := actAs(w, r, "user", req.User)
	if !ok {
		return
	}
	req.User = user
	body, err := req.Completions()
	if err != nil {
		writeChatError(w, req, err)
		return
	}
	args := jobs.InteractiveArgs{ID: jobs.NewChatCompletionID(), StreamKey: pipeline.NewSealKey(), Body: body,
		Messages: req.Messages, Session: req.Session, Template: req.Template, Topic: req.Topic, Replaces: req.Replaces}
	if args.Messages == nil {
		args.Messages = []generation.ChatMessage{} // refused by Validate, naming messages
	}
	if status, err := c.useSession(r.Context(), principalOf(r), &args); err != nil {
		c.writeRefusal(w, status, err, req)
		return
	}
	if err := args.Validate(); err != nil {
		writeChatError(w, req, err)
		return
	}
	if !c.models.requireModel(w, r, args.Body.Model) {
		return
	}
	top := req.TopLogprobsOf()
	c.run(w, r, args, answerStream{on: req.Stream, includeUsage: req.StreamOptions.includeUsage()}, func(out completionOut) answerShape {
		s := &chatShape{out: out, top: top, texts: make([]strings.Builder, out.choices)}
		if req.Logprobs {
			s.logprobs = make([][]generation.ChatTokenLogprob, out.choices)
		}
		return s
	})
}

// writeChatError answers 400 for a refused chat request, naming the field
// (paramOf). The completions body the chat becomes names its token limit
// max_tokens; a request that gave it as max_completion_tokens reads that
// name.
func writeChatError(w http.ResponseWriter, req chatRequest, err error) {
	param, msg := paramOf(err, req), err.Error()
	if param == "max_tokens" && req.MaxTokens == nil && req.MaxCompletionTokens != nil {
		param, msg = "max_completion_tokens", "max_completion_tokens"+strings.TrimPrefix(msg, "max_tokens")
	}
	writeParamError(w, http.StatusBadRequest, "invalid_request", param, msg)
}

// chatShape is the answer of POST /v1/chat/completions: chat.completion,
// or chat.completion.chunk events that open each choice with the
// assistant role.
type chatShape struct {
	out      completionOut
	top      int // top_logprobs: the alternatives shown per token
	texts    []strings.Builder
	logprobs [][]generation.ChatTokenLogprob // nil unless asked for
}

// chatChunk is one server-sent event of a streamed chat completion.
type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   *generation.Usage `json:"usage,omitempty"`
}

type chatChunkChoice struct {
	Index        int                      `json:"index"`
	Delta        chatDelta                `json:"delta"`
	Logprobs     *generation.ChatLogprobs `json:"logprobs"`
	FinishReason *string                  `json:"finish_reason"`
}

// chatDelta is what a chunk adds to its choice's message.
type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

func (s *chatShape) chunk(choices ...chatChunkChoice) chatChunk {
	if choices == nil {
		choices = []chatChunkChoice{}
	}
	return chatChunk{ID: s.out.id, Object: "chat.completion.chunk", Created: s.out.created, Model: s.out.model, Choices: choices}
}

// opening gives each choice its role, as OpenAI's first chunk does.
func (s *chatShape) opening() []any {
	out := make([]any, s.out.choices)
	for i := range out {
		empty := ""
		out[i] = s.chunk(chatChunkChoice{Index: i, Delta: chatDelta{Role: generation.RoleAssistant, Content: &empty}})
	}
	return out
}

func (s *chatShape) token(m tokenstream.Message) any {
	s.texts[m.Choice].WriteString(m.Text)
	text := m.Text
	ch := chatChunkChoice{Index: m.Choice, Delta: chatDelta{Content: &text}}
	if s.logprobs != nil && m.Logprobs != nil {
		e := generation.NewChatTokenLogprob(*m.Logprobs, s.top)
		s.logprobs[m.Choice] = append(s.logprobs[m.Choice], e)
		ch.Logprobs = &generation.ChatLogprobs{Content: []generation.ChatTokenLogprob{e}}
	}
	return s.chunk(ch)
}

func (s *chatShape) finish(done tokenstream.Message, i int) any {
	finish := finishReason(done, i)
	return s.chunk(chatChunkChoice{Index: i, FinishReason: &finish})
}

func (s *chatShape) usage(done tokenstream.Message) any {
	c := s.chunk()
	c.Usage = done.Usage
	return c
}

func (s *chatShape) whole(done tokenstream.Message) any {
	out := generation.ChatCompletion{ID: s.out.id, Object: "chat.completion", Created: s.out.created, Model: s.out.model, Usage: *done.Usage}
	for i := range s.texts {
		ch := generation.ChatChoice{Index: i, FinishReason: finishReason(done, i),
			Message: generation.ChatMessage{Role: generation.RoleAssistant, Content: generation.ChatContent(s.texts[i].String())}}
		if s.logprobs != nil {
			ch.Logprobs = &generation.ChatLogprobs{Content: s.logprobs[i]}
			if ch.Logprobs.Content == nil {
				ch.Logprobs.Content = []generation.ChatTokenLogprob{}
			}
		}
		out.Choices = append(out.Choices, ch)
	}
	return out
}
