package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

// EnvInteractiveStartTimeout bounds how long POST /v1/completions waits for
// a worker to pick the generation up.
const EnvInteractiveStartTimeout = "TANDEM_INTERACTIVE_START_TIMEOUT"

// defaultStartTimeout is EnvInteractiveStartTimeout's default.
const defaultStartTimeout = 30 * time.Second

// maxCompletionBody bounds a POST /v1/completions or /v1/sessions body:
// the prompt limit with room for JSON escapes and the other fields.
const maxCompletionBody = 8*jobs.MaxInteractivePromptBytes + 4096

// completionsAPI serves interactive generation (POST /v1/completions) and
// its sessions. The flow of one completion: validate the body and apply the
// session; open the token stream, then enqueue the job on the interactive
// queue (task id = completion id; tokenstream.Begin); relay the worker's
// messages to the client as they come. A client that goes away cancels the
// work (tokenstream.Reader.Abandon). The job carries a fresh stream key; a
// message not sealed with it (someone else on the bus) ends the request
// with an error and is never relayed: 502 bad_stream before the answer has
// begun or without stream: true, an SSE error event (code stream_failed)
// in a stream.
type completionsAPI struct {
	bus          *pipeline.Bus // nil without NATS: completions answer 503
	client       *pipeline.Client
	sessions     *loop.SessionStore
	logger       *slog.Logger
	startTimeout time.Duration
	// models checks a request's model before a worker is asked (nil: the
	// worker does); workers answers whether one serves the interactive
	// queue (requireInteractiveWorker; nil: requests wait for one).
	models  *modelCatalog
	workers *workerWatch
}

// newCompletionsAPI connects to NATS when cfg names a server; sessions live
// in the client's Redis.
func newCompletionsAPI(ctx context.Context, cfg pipeline.Config, client *pipeline.Client, logger *slog.Logger) (*completionsAPI, error) {
	c := &completionsAPI{client: client, sessions: loop.NewSessionStore(client.Redis(), loop.SessionOptions{}), logger: logger, startTimeout: defaultStartTimeout,
		workers: newWorkerWatch(client.Inspector())}
	if v := envOr(EnvInteractiveStartTimeout, ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%s: %q is not a positive duration such as 30s", EnvInteractiveStartTimeout, v)
		}
		c.startTimeout = d
	}
	if cfg.NATSURL == "" {
		logger.Warn("no NATS URL: POST /v1/completions answers 503 (set TANDEM_NATS_URL)")
		return c, nil
	}
	bus, err := connectBus(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c.bus = bus
	return c, nil
}

// Close closes the NATS connection, if any.
func (c *completionsAPI) Close() {
	if c != nil && c.bus != nil {
		c.bus.Close()
	}
}

// completionsRoutes adds:
//
//	POST /v1/completions     one completion of n choices (OpenAI body + session, template, topic); stream: true answers with SSE
//	POST /v1/chat/completions one chat completion of n replies (OpenAI body + session, template, topic, replaces); stream: true answers with SSE
//	POST /v1/sessions        a new session ({"user","instructions"}); 201
//	GET  /v1/sessions/{id}   a session: instructions, what they mean, the turns kept
//
// A token that may not impersonate creates completions and sessions only
// as its own user ("user" filled in when absent, 403 for another) and
// reads and continues only its own user's sessions (403).
func (a *apiServer) completionsRoutes(mux *http.ServeMux) {
	c := a.completions
	if c == nil {
		return
	}
	mux.HandleFunc("POST /v1/completions", c.create)
	mux.HandleFunc("POST /v1/chat/completions", c.createChat)
	mux.HandleFunc("POST /v1/sessions", c.createSession)
	mux.HandleFunc("GET /v1/sessions/{id}", c.getSession)
}

// completionRequest is the body of POST /v1/completions: OpenAI's fields
// plus Tandem's session, template and topic, and replaces: the generation
// id of the session's last turn this completion regenerates (the history
// then stops before that turn, and the new reply takes its place).
//
// prompt is OpenAI's: a string, a list of strings, a list of token ids or
// a list of lists of them (jobs.Prompts); each prompt gets n choices,
// numbered prompt_index*n + k as OpenAI numbers them.
//
// OpenAI's fields that Tandem cannot act on are accepted at the values
// that ask for nothing (check): best_of 1 or n (every choice generated is
// returned), an empty logit_bias, a null or empty suffix (GPT-2 style
// models continue a prompt; they cannot insert before a suffix). echo
// puts each choice's prompt before its text (not with logprobs, which
// cover the generated tokens only).
// stream_options.include_usage adds a last chunk with the usage and no
// choices; the chunk that ends the last choice carries the usage anyway.
type completionRequest struct {
	generation.CompletionsBody
	// Prompt takes the place of the body's own.
	Prompt        jobs.Prompts       `json:"prompt"`
	Suffix        *string            `json:"suffix,omitempty"`
	Stream        bool               `json:"stream,omitempty"`
	StreamOptions *streamOptions     `json:"stream_options,omitempty"`
	Echo          *bool              `json:"echo,omitempty"`
	BestOf        *int               `json:"best_of,omitempty"`
	LogitBias     map[string]float64 `json:"logit_bias,omitempty"`
	Session       string             `json:"session,omitempty"`
	Template      string             `json:"template,omitempty"`
	Topic         string             `json:"topic,omitempty"`
	Replaces      string             `json:"replaces,omitempty"`
}

// streamOptions is OpenAI's stream_options of a streamed request.
type streamOptions struct {
	// IncludeUsage asks for a last chunk with the usage and no choices.
	IncludeUsage bool `json:"include_usage"`
}

// UnmarshalJSON implements json.Unmarshaler, naming the field when the
// value is not an object of known fields.
func (o *streamOptions) UnmarshalJSON(b []byte) error {
	type plain streamOptions
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode((*plain)(o)); err != nil {
		return fmt.Errorf(`stream_options: want an object such as {"include_usage": true}: %w`, err)
	}
	return nil
}

// includeUsage reports whether o asks for the usage-only last chunk.
func (o *streamOptions) includeUsage() bool { return o != nil && o.IncludeUsage }

// check refuses the OpenAI fields at values Tandem cannot honour, naming
// the field.
func (r completionRequest) check() error {
	switch {
	case r.Suffix != nil && *r.Suffix != "":
		return errors.New("suffix: not supported: GPT-2 style models continue a prompt and cannot insert text before a suffix (send null or leave it out)")
	case r.echo() && r.Logprobs != nil && *r.Logprobs > 0:
		return errors.New("echo: true with logprobs is not supported (logprobs cover the generated tokens only)")
	case r.BestOf != nil && *r.BestOf != 1 && (r.N == nil || *r.BestOf != *r.N):
		return fmt.Errorf("best_of: %d; interactive generation returns every choice it makes (best_of 1, or equal to n)", *r.BestOf)
	case len(r.LogitBias) > 0:
		return fmt.Errorf("logit_bias: %d entries; logit bias is not supported (send {} or leave it out)", len(r.LogitBias))
	}
	return nil
}

// echo reports whether the request asks for its prompt before the text.
func (r completionRequest) echo() bool { return r.Echo != nil && *r.Echo }

func (c *completionsAPI) create(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !decodeStrict(w, r, maxCompletionBody, &req) {
		return
	}
	user, ok := actAs(w, r, "user", req.User)
	if !ok {
		return
	}
	req.User = user
	args, status, err := c.prepare(r.Context(), principalOf(r), req)
	if err != nil {
		c.writeRefusal(w, status, err, req)
		return
	}
	if !c.models.requireModel(w, r, args.Body.Model) {
		return
	}
	logprobs := args.Body.Logprobs != nil && *args.Body.Logprobs > 0
	var echo []string
	if req.echo() {
		if echo, err = echoes(args); err != nil {
			writeUnavailable(w, c.logger, err)
			return
		}
	}
	c.run(w, r, args, answerStream{on: req.Stream, includeUsage: req.StreamOptions.includeUsage()}, func(out completionOut) answerShape {
		return &completionShape{out: out, reply: newReplyChoices(out, logprobs), echo: echo}
	})
}

// echoes is what echo puts before each choice's text: its prompt, token
// ids decoded with GPT-2's tokenizer (the one every model here uses).
func echoes(args jobs.InteractiveArgs) ([]string, error) {
	n := args.Choices() / max(args.Prompts.Len(), 1)
	prompts := []string{args.Body.Prompt}
	if args.Prompts.Len() > 0 {
		prompts = args.Prompts.Texts
	}
	if args.Prompts.Tokens != nil {
		tok, err := model.NewTokenizer()
		if err != nil {
			return nil, err
		}
		prompts = nil
		for _, ids := range args.Prompts.Tokens {
			prompts = append(prompts, tok.Decode(ids)) // JSON turns bytes that are not UTF-8 into U+FFFD
		}
	}
	out := make([]string, 0, args.Choices())
	for _, p := range prompts {
		for range n {
			out = append(out, p)
		}
	}
	return out, nil
}

// answerStream says how a request wants its answer: streamed (on) and
// with a usage-only last chunk (includeUsage).
type answerStream struct{ on, includeUsage bool }

// run generates args (validated) on a worker and answers in the shape
// newShape gives for the completion: streamed, or as one object.
func (c *completionsAPI) run(w http.ResponseWriter, r *http.Request, args jobs.InteractiveArgs, st answerStream, newShape func(completionOut) answerShape) {
	if c.bus == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "interactive generation needs NATS: start the producer with TANDEM_NATS_URL (or --nats-url)")
		return
	}
	if !c.requireInteractiveWorker(w) {
		return
	}
	g, err := c.begin(r.Context(), args)
	if err != nil {
		writeUnavailable(w, c.logger.With("op", "interactive enqueue", "id", args.ID), err)
		return
	}
	defer g.Close()
	// Wait for a worker before answering, so "nobody serves the
	// interactive queue" is a plain 503 and not a broken stream.
	m, gone, err := g.Follow(r.Context(), c.startTimeout)
	switch {
	case gone:
		return
	case err != nil && !errors.Is(err, tokenstream.ErrTimeout):
		// A message that fails its seal or its order: never relayed.
		writeError(w, http.StatusBadGateway, "bad_stream", err.Error())
		return
	case err != nil:
		c.logger.Warn("interactive: no worker started the generation", "id", args.ID, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("no worker started the generation within %v (is one serving the %q queue?)", c.startTimeout, pipeline.QueueInteractive))
		return
	case m.Type == tokenstream.TypeError:
		// The worker could not send its start message and said so.
		writeGenFault(w, m.Error)
		return
	case m.Type != tokenstream.TypeStart:
		writeError(w, http.StatusBadGateway, "bad_stream", fmt.Sprintf("token stream began with %q, want %q", m.Type, tokenstream.TypeStart))
		return
	}
	out := completionOut{id: args.ID, model: args.Body.Model, created: time.Now().Unix(), choices: args.Choices()}
	c.relay(w, r, g, out, newShape(out), st)
}

// writeRefusal answers a request that prepare or useSession refused with
// status: 503 when a store failed, otherwise naming the field of body
// (the request) that err names.
func (c *completionsAPI) writeRefusal(w http.ResponseWriter, status int, err error, body any) {
	if status >= http.StatusInternalServerError {
		writeUnavailable(w, c.logger, err)
		return
	}
	writeParamError(w, status, errorCode(status), paramOf(err, body), err.Error())
}

// errorCode is the error code of an answer with status, for prepare's
// failures.
func errorCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	}
	return "unavailable"
}

// prepare turns a request into job args: the session applied
// (useSession), and everything validated. The status goes with err.
func (c *completionsAPI) prepare(ctx context.Context, p auth.Principal, req completionRequest) (jobs.InteractiveArgs, int, error) {
	args := jobs.InteractiveArgs{ID: jobs.NewCompletionID(), StreamKey: pipeline.NewSealKey(), Body: req.CompletionsBody, Session: req.Session, Template: req.Template, Topic: req.Topic, Replaces: req.Replaces}
	// A single text travels as the body's prompt, which sessions and
	// producer chat use; lists and token ids as prompts.
	if in := req.Prompt; len(in.Texts) == 1 && in.Tokens == nil {
		args.Body.Prompt = in.Texts[0]
	} else {
		args.Prompts = in
	}
	if err := req.check(); err != nil {
		return args, http.StatusBadRequest, err
	}
	if status, err := c.useSession(ctx, p, &args); err != nil {
		return args, status, err
	}
	if err := args.Validate(); err != nil {
		return args, http.StatusBadRequest, err
	}
	return args, 0, nil
}

// useSession applies args.Session, when set, to args: the session must be
// one p may use (auth.Principal.Owns); its instructions fill the sampling
// fields the body leaves out (the body wins) and give the prefix; its user
// fills an empty user; a completion gets its turns as the history (before
// the turn args.Replaces regenerates, which must be the last), while a
// chat's messages are its whole conversation and the session only records
// the turn. The status goes with err.
func (c *completionsAPI) useSession(ctx context.Context, p auth.Principal, args *jobs.InteractiveArgs) (int, error) {
	if args.Session == "" {
		return 0, nil
	}
	if err := pipeline.ValidateID(args.Session); err != nil {
		return http.StatusBadRequest, fmt.Errorf("session: %w", err)
	}
	sess, err := c.sessions.Get(ctx, args.Session)
	switch {
	case errors.Is(err, loop.ErrSessionNotFound):
		return http.StatusNotFound, fmt.Errorf("session: %w", err)
	case err != nil:
		return http.StatusServiceUnavailable, err
	case !p.Owns(sess.User):
		return http.StatusForbidden, fmt.Errorf("session: %w", otherUsers(p, "session "+sess.ID, "sessions"))
	}
	ins, err := loop.ParseInstructions(sess.Instructions)
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("session %s: %w", sess.ID, err)
	}
	if args.Body.MaxTokens == nil && ins.MaxTokens > 0 {
		n := min(ins.MaxTokens, jobs.MaxInteractiveTokens)
		args.Body.MaxTokens = &n
	}
	if args.Body.Temperature == nil && ins.Temperature != nil {
		args.Body.Temperature = ins.Temperature
	}
	if args.Body.User == "" {
		args.Body.User = sess.User
	}
	turns := sess.Turns
	if args.Replaces != "" {
		i := slices.IndexFunc(turns, func(t loop.Turn) bool { return t.GenerationID == args.Replaces })
		if i < 0 || i != len(turns)-1 {
			return http.StatusBadRequest, fmt.Errorf("replaces: %.64q is not the last turn of session %s; only the last reply can be regenerated", args.Replaces, sess.ID)
		}
		turns = turns[:i]
	}
	args.Prefix = ins.Prefix
	if args.Messages == nil {
		args.History = turns
	}
	return 0, nil
}

// begin opens the generation's token stream (tokenstream.Begin), then
// enqueues the job; an abandoned generation's job is deleted while queued.
func (c *completionsAPI) begin(ctx context.Context, args jobs.InteractiveArgs) (*tokenstream.Reader, error) {
	job := tokenstream.Job{StartTimeout: c.startTimeout, Enqueue: func(ctx context.Context) error {
		// The deadline keeps a task that comes back to the queue (a worker
		// stopped mid-run) from running after nobody can be waiting for it.
		deadline := time.Now().Add(c.startTimeout + jobs.InteractiveTimeout)
		_, err := pipeline.Enqueue(ctx, c.client, args, asynq.TaskID(args.ID), asynq.Deadline(deadline))
		return err
	}, Delete: func() error { return c.client.Inspector().DeleteTask(pipeline.QueueInteractive, args.ID) }}
	return tokenstream.Begin(ctx, c.bus, args.ID, tokenstream.Decoder{Key: args.StreamKey, N: args.Choices()}, job, c.logger)
}

// completionOut is what every answer of one completion shares.
type completionOut struct {
	id, model string
	created   int64
	choices   int // n
}

// answerShape writes one generation's answer in a route's shape
// (/v1/completions: completionShape; /v1/chat/completions: chatShape): it
// assembles the choices from the token messages and makes the chunks of a
// stream and the object of an answer that is not streamed.
type answerShape interface {
	// opening is the chunks a stream begins with, before any token.
	opening() []any
	// token takes a token message (tokenstream.Decoder checked its choice) and
	// returns its chunk.
	token(m tokenstream.Message) any
	// finish is the chunk that ends choice i; done is the last message.
	finish(done tokenstream.Message, i int) any
	// usage is the last chunk, with the usage and no choice, that
	// stream_options.include_usage asks for.
	usage(done tokenstream.Message) any
	// whole is the answer of a request that does not stream.
	whole(done tokenstream.Message) any
}

// completionShape is the answer of POST /v1/completions.
type completionShape struct {
	out   completionOut
	reply *replyChoices
	echo  []string // per choice, its prompt, before its text (echo: true)
}

func (s *completionShape) chunk(choices ...chunkChoice) completionChunk {
	return completionChunk{ID: s.out.id, Object: "text_completion", Created: s.out.created, Model: s.out.model, Choices: choices}
}

// opening streams the echoed prompt of each choice, if any.
func (s *completionShape) opening() []any {
	out := make([]any, len(s.echo))
	for i, e := range s.echo {
		out[i] = s.chunk(chunkChoice{Index: i, Text: e})
	}
	return out
}

func (s *completionShape) token(m tokenstream.Message) any { return s.chunk(s.reply.add(m)) }

// finish ends choice i; the last choice's chunk carries the usage and
// Tandem's timing.
func (s *completionShape) finish(done tokenstream.Message, i int) any {
	finish := finishReason(done, i)
	end := s.chunk(chunkChoice{Index: i, FinishReason: &finish})
	if i == s.out.choices-1 {
		end.Usage, end.Timing = done.Usage, done.Timing
	}
	return end
}

func (s *completionShape) usage(done tokenstream.Message) any {
	c := s.chunk()
	c.Choices, c.Usage = []chunkChoice{}, done.Usage
	return c
}

func (s *completionShape) whole(done tokenstream.Message) any {
	choices := s.reply.choices(done)
	for i, e := range s.echo {
		choices[i].Text = e + choices[i].Text
	}
	return generation.CompletionResponse{
		ID: s.out.id, Object: "text_completion", Created: s.out.created, Model: s.out.model,
		Choices: choices,
		Usage:   *done.Usage, // tokenstream.Decoder refuses a done message without usage
	}
}

// replyChoices assembles the choices of one generation from its token
// messages: each choice's text is its token texts joined (done repeats
// the text only for n = 1, and only when it fits in one message), at most
// MaxInteractiveTokens tokens each.
type replyChoices struct {
	texts    []strings.Builder
	logprobs []generation.ChoiceLogprobs // nil unless asked for
}

func newReplyChoices(out completionOut, logprobs bool) *replyChoices {
	r := &replyChoices{texts: make([]strings.Builder, out.choices)}
	if logprobs {
		r.logprobs = make([]generation.ChoiceLogprobs, out.choices)
	}
	return r
}

// add takes a token message (tokenstream.Decoder checked its choice) and returns
// what a stream's chunk says of it.
func (r *replyChoices) add(m tokenstream.Message) chunkChoice {
	r.texts[m.Choice].WriteString(m.Text)
	ch := chunkChoice{Index: m.Choice, Text: m.Text}
	if r.logprobs != nil && m.Logprobs != nil {
		lp := &r.logprobs[m.Choice]
		lp.Append(*m.Logprobs)
		ch.Logprobs = lp.Last()
	}
	return ch
}

// finishReason is how choice i ended, from a done message (a message
// without choices is a single choice's).
func finishReason(done tokenstream.Message, i int) string {
	if i < len(done.Choices) {
		return done.Choices[i].FinishReason
	}
	return done.FinishReason
}

// choices are the finished choices, done being the last message.
func (r *replyChoices) choices(done tokenstream.Message) []generation.Choice {
	out := make([]generation.Choice, len(r.texts))
	for i := range r.texts {
		out[i] = generation.Choice{Index: i, Text: r.texts[i].String(), FinishReason: finishReason(done, i)}
		if r.logprobs != nil {
			out[i].Logprobs = &r.logprobs[i]
		}
	}
	return out
}

// relay answers with a started generation's messages: one object, or
// server-sent events (the shape's opening, one per token, then one per
// choice with its finish reason, the usage-only chunk when asked for, then
// "data: [DONE]"). Nothing is written before the first message after the
// start, each awaited up to jobs.InteractiveTimeout as every message is: an
// error the worker finds before the first token (a prompt the model's
// context cannot hold, a token id outside its vocabulary) reaches a
// streaming client as it reaches any other, as an HTTP error status with
// the API's error body. Once the stream has begun, a failure is an error
// event, as OpenAI sends one.
func (c *completionsAPI) relay(w http.ResponseWriter, r *http.Request, g *tokenstream.Reader, out completionOut, shape answerShape, st answerStream) {
	var sse *sseWriter // the stream, once begun
	for {
		m, gone, err := g.Follow(r.Context(), jobs.InteractiveTimeout)
		switch {
		case gone:
			return
		case err != nil && sse != nil:
			sse.fail(out.id, &tokenstream.Fault{Code: "stream_failed", Message: err.Error()})
			return
		case errors.Is(err, tokenstream.ErrTimeout):
			writeError(w, http.StatusGatewayTimeout, "timeout", err.Error())
			return
		case err != nil:
			writeError(w, http.StatusBadGateway, "bad_stream", err.Error())
			return
		case m.Type == tokenstream.TypeError && sse != nil:
			sse.fail(out.id, m.Error)
			return
		case m.Type == tokenstream.TypeError:
			writeGenFault(w, m.Error)
			return
		}
		if st.on && sse == nil {
			flusher, ok := startSSE(w)
			if !ok {
				g.Abandon()
				return
			}
			sse = &sseWriter{w: w, flusher: flusher}
			for _, ch := range shape.opening() {
				sse.send(ch)
			}
		}
		switch m.Type {
		case tokenstream.TypeToken:
			if ch := shape.token(m); sse != nil {
				sse.send(ch)
			}
		case tokenstream.TypeDone:
			if sse == nil {
				writeJSON(w, http.StatusOK, shape.whole(m))
				return
			}
			for i := range out.choices {
				sse.send(shape.finish(m, i))
			}
			if st.includeUsage {
				sse.send(shape.usage(m))
			}
			sse.done()
			return
		}
	}
}

// writeGenFault answers with the error of a generation the worker
// failed, naming the field at fault when it does, before any answer has
// begun.
func writeGenFault(w http.ResponseWriter, f *tokenstream.Fault) {
	writeParamError(w, genErrorStatus(f.Code), f.Code, f.Param, f.Message)
}

// genErrorStatus maps a worker's error code to the HTTP status of an
// answer that has not begun (any answer but a stream past its first
// token).
func genErrorStatus(code string) int {
	switch code {
	case tokenstream.CodeModel:
		return http.StatusNotFound // as OpenAI answers an unknown model
	case tokenstream.CodeContext, tokenstream.CodeInvalid:
		return http.StatusBadRequest
	case tokenstream.CodeTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// completionChunk is one server-sent event of a streamed completion, in
// OpenAI's completion-chunk shape: one token of one choice (its index), or
// the end of one choice with its finish reason; the last chunk also
// carries the usage (of every choice) and Tandem's timing.
type completionChunk struct {
	ID      string              `json:"id"`
	Object  string              `json:"object"`
	Created int64               `json:"created"`
	Model   string              `json:"model"`
	Choices []chunkChoice       `json:"choices"`
	Usage   *generation.Usage   `json:"usage,omitempty"`
	Timing  *tokenstream.Timing `json:"timing,omitempty"`
	Error   *tokenstream.Fault  `json:"error,omitempty"`
}

type chunkChoice struct {
	Index        int                        `json:"index"`
	Text         string                     `json:"text"`
	Logprobs     *generation.ChoiceLogprobs `json:"logprobs"` // the chunk's token, when asked for
	FinishReason *string                    `json:"finish_reason"`
}

// sseWriter writes a server-sent event stream that has begun.
type sseWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
}

// startSSE answers 200 with the headers of a server-sent event stream.
func startSSE(w http.ResponseWriter) (http.Flusher, bool) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "unsupported", "streaming is not supported by this connection")
		return nil, false
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	return flusher, true
}

// send writes v as one event. A write error means the client left; the
// next read of the generation's stream sees the request's context end and
// cancels the work.
func (s *sseWriter) send(v any) {
	b, _ := json.Marshal(v)
	_, _ = fmt.Fprintf(s.w, "data: %s\n\n", b)
	s.flusher.Flush()
}

// done ends the stream.
func (s *sseWriter) done() {
	_, _ = fmt.Fprint(s.w, "data: [DONE]\n\n")
	s.flusher.Flush()
}

// fail ends the stream of completion id with an error event.
func (s *sseWriter) fail(id string, f *tokenstream.Fault) {
	s.send(completionChunk{ID: id, Object: "error", Error: f})
	s.done()
}

// createSessionRequest is the body of POST /v1/sessions.
type createSessionRequest struct {
	ID           string `json:"id,omitempty"` // default: a fresh sess-... id
	User         string `json:"user,omitempty"`
	Instructions string `json:"instructions,omitempty"` // grammar: loop.ParseInstructions
}

// sessionView is a session with what its instructions mean.
type sessionView struct {
	loop.Session
	Params loop.Instructions `json:"params"`
}

func viewSession(s loop.Session) sessionView {
	ins, _ := loop.ParseInstructions(s.Instructions) // checked when created
	return sessionView{Session: s, Params: ins}
}

func (c *completionsAPI) createSession(w http.ResponseWriter, r *http.Request) {
	var req createSessionRequest
	if !decodeStrict(w, r, maxCompletionBody, &req) {
		return
	}
	user, ok := actAs(w, r, "user", req.User)
	if !ok {
		return
	}
	sess := loop.Session{ID: req.ID, User: user, Instructions: req.Instructions}
	if sess.ID == "" {
		sess.ID = loop.NewSessionID()
	}
	if err := loop.ValidateSession(sess); err != nil {
		writeParamError(w, http.StatusBadRequest, "invalid_request", paramOf(err, req), err.Error())
		return
	}
	s, err := c.sessions.Create(r.Context(), sess)
	writeSession(w, http.StatusCreated, s, err)
}

// writeSession answers with s, or with the status err calls for.
func writeSession(w http.ResponseWriter, ok int, s loop.Session, err error) {
	switch {
	case errors.Is(err, loop.ErrSessionExists):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, loop.ErrSessionNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case err != nil:
		writeUnavailable(w, nil, err)
	default:
		writeJSON(w, ok, viewSession(s))
	}
}

func (c *completionsAPI) getSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := pipeline.ValidateID(id); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "id: "+err.Error())
		return
	}
	s, err := c.sessions.Get(r.Context(), id)
	if p := principalOf(r); err == nil && !p.Owns(s.User) {
		writeError(w, http.StatusForbidden, "forbidden", otherUsers(p, "session "+id, "sessions").Error())
		return
	}
	writeSession(w, http.StatusOK, s, err)
}
