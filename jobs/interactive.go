package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

// KindInteractive is the stable kind string of InteractiveArgs.
const KindInteractive = pipeline.KindPrefixGenerate + "interactive"

// Limits on one interactive generation.
const (
	// MaxInteractivePromptBytes bounds the person's new prompt.
	MaxInteractivePromptBytes = limits.InteractivePromptBytes
	// MaxInteractiveTokens bounds max_tokens: a person reads the reply as
	// it streams; longer texts are batch work.
	MaxInteractiveTokens = limits.InteractiveTokens
	// MaxInteractiveChoices bounds n: the choices stream side by side to a
	// person, each one more sequence in the model's engine.
	MaxInteractiveChoices = limits.InteractiveChoices
	// MaxInteractivePromptChoices bounds prompts × n, the choices of a
	// completion over all its prompts (Prompts), each one more sequence.
	MaxInteractivePromptChoices = limits.InteractivePromptChoices
	// MaxInteractivePrefixBytes bounds the instruction prefix a session adds.
	MaxInteractivePrefixBytes = loop.MaxInstructionsBytes
	// InteractiveTimeout bounds one run on a worker.
	InteractiveTimeout = 5 * time.Minute
)

// Finish reasons beyond the model's "stop" and "length".
const (
	// FinishCancelled ends a generation whose client went away.
	FinishCancelled = "cancelled"
)

// SourceInteractive marks loop records written by this kind.
const SourceInteractive = "interactive"

// InteractiveArgs asks a worker to generate one completion (of Body.N
// choices) for a person who waits for it, streaming each token on its
// token stream (package tokenstream), stopping when the producer's cancel
// arrives there, and recording each choice in the loop store under
// ChoiceID(ID, choice).
type InteractiveArgs struct {
	// ID is the completion id the client sees; the subject token of the
	// stream and the id of the loop record.
	ID string `json:"id"`
	// Body holds the model, the person's new prompt and the sampling fields
	// (OpenAI /v1/completions names), session instructions already applied.
	Body generation.CompletionsBody `json:"body"`
	// Session, when set, makes the prompt a transcript: Prefix, then
	// History (oldest turns dropped first until the prompt fits the model's
	// context with room for max_tokens), then the new prompt; the finished
	// turn is appended to the session. A chat's prompt is Prefix and its
	// Messages (no History), and its turn is the last user message and
	// the reply.
	Session string      `json:"session,omitempty"`
	Prefix  string      `json:"prefix,omitempty"`
	History []loop.Turn `json:"history,omitempty"`
	// Replaces is the generation id of the session turn this one
	// regenerates: History then stops before that turn, and the finished
	// turn takes its place (loop.SessionStore.Replace) instead of being
	// appended. Needs Session.
	Replaces string `json:"replaces,omitempty"`
	// Template and Topic name the recommender items the prompt came from,
	// for feedback on the result.
	Template string `json:"template,omitempty"`
	Topic    string `json:"topic,omitempty"`
	// Prompts, when set, are the completion's prompts in place of
	// Body.Prompt (then empty): several texts, or GPT-2 token ids, each
	// given Body.N choices. Choice k of prompt i is choice i*N+k of the
	// whole (OpenAI's numbering), on the token stream, in the answer and
	// in ChoiceID. The producer leaves a single text in Body.Prompt. Not
	// with Session or Messages.
	Prompts Prompts `json:"prompts,omitzero"`
	// Messages, when set, make this a chat completion: the prompt is the
	// messages written in the model's chat format
	// (generation.LoadedModel.Chat), the oldest left out when they do not
	// fit the model's context with room for max_tokens
	// (generation.TrimChat); Body.Prompt stays empty, and the format's turn
	// boundary is one more stop sequence.
	Messages []generation.ChatMessage `json:"messages,omitempty"`
	// StreamKey seals the token stream and its cancel: the producer
	// draws it for this completion and hands it over in the task,
	// which travels through Redis, not the bus; the worker seals every
	// message with it and the producer refuses any message that does not
	// verify, so nobody else on the bus can write into the reply. Hex,
	// pipeline.SealKeyBytes bytes; never shown to API clients
	// (PublicPayload).
	StreamKey string `json:"stream_key"`
}

// Kind implements pipeline.JobArgs.
func (InteractiveArgs) Kind() string { return KindInteractive }

// KindOptions implements pipeline.KindOptioner: the interactive queue, no
// retry (the person has gone by the time a retry would run) and a bounded
// run, so that a producer with no worker registry still enqueues it right.
func (InteractiveArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueInteractive, MaxRetry: pipeline.NoRetry, Timeout: InteractiveTimeout}
}

// Validate implements pipeline.Validator. Errors name the field as the
// HTTP body spells it.
func (a InteractiveArgs) Validate() error {
	b := a.Body
	if a.Messages != nil {
		if b.Prompt != "" || len(a.History) > 0 {
			return errors.New("messages: a chat completion takes neither a prompt nor a session history (its messages are the conversation)")
		}
		if err := generation.ValidateChatMessages(a.Messages, MaxInteractivePromptBytes); err != nil {
			return err
		}
	}
	switch {
	case b.Model == "":
		return errors.New("model: required (a registered name, a model directory or builtin:tiny)")
	case b.Prompt == "" && a.Messages == nil && a.Prompts.Len() == 0:
		return errors.New("prompt: required (a non-empty string, a list of them, token ids or a list of lists of token ids)")
	case len(b.Prompt) > MaxInteractivePromptBytes:
		return fmt.Errorf("prompt: %d bytes, at most %d", len(b.Prompt), MaxInteractivePromptBytes)
	case !utf8.ValidString(b.Prompt):
		return errors.New("prompt: not valid UTF-8")
	case b.N != nil && (*b.N < 1 || *b.N > MaxInteractiveChoices):
		return fmt.Errorf("n: %d out of range [1, %d] for interactive generation (more choices are batch work)", *b.N, MaxInteractiveChoices)
	case b.N != nil && *b.N > 1 && a.Session != "":
		return fmt.Errorf("n: %d with a session; a session turn keeps one reply, so a session takes n=1", *b.N)
	case b.MaxTokens != nil && (*b.MaxTokens < 1 || *b.MaxTokens > MaxInteractiveTokens):
		return fmt.Errorf("max_tokens: %d out of range [1, %d]", *b.MaxTokens, MaxInteractiveTokens)
	case len(a.Prefix) > MaxInteractivePrefixBytes:
		return fmt.Errorf("prefix: %d bytes, at most %d", len(a.Prefix), MaxInteractivePrefixBytes)
	case a.Session == "" && (a.Prefix != "" || len(a.History) > 0):
		return errors.New("session: required when prefix or history is given")
	}
	if err := a.checkPrompts(); err != nil {
		return err
	}
	if _, err := b.Params(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "body: "))
	}
	if a.Session != "" {
		if err := pipeline.ValidateID(a.Session); err != nil {
			return fmt.Errorf("session: %w", err)
		}
	}
	if a.Replaces != "" {
		if a.Session == "" {
			return errors.New("replaces: needs a session (it names the session turn the new reply takes the place of)")
		}
		if err := pipeline.ValidateID(a.Replaces); err != nil {
			return fmt.Errorf("replaces: %w", err)
		}
	}
	if err := loop.ValidateHistory(a.History); err != nil {
		return err
	}
	if err := pipeline.ValidateSealKey(a.StreamKey); err != nil {
		return fmt.Errorf("stream_key: %w", err)
	}
	rec := loop.Generation{ID: a.ID, User: b.User, Session: a.Session, Model: b.Model, Template: a.Template, Topic: a.Topic}
	if err := rec.Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "generation: "))
	}
	if n := a.Choices(); n > 1 {
		if err := pipeline.ValidateID(ChoiceID(a.ID, n-1)); err != nil {
			return fmt.Errorf("id: the record id of choice %d: %w", n-1, err)
		}
	}
	return nil
}

// checkPrompts checks Prompts, when given: alone (no Body.Prompt, session
// or messages), each text within the bounds of a single prompt, each token
// id in GPT-2's vocabulary (a model's own, if smaller, is checked where it
// runs), and prompts × n within MaxInteractivePromptChoices. Its errors
// are *generation.RequestError naming the prompt ("prompt[1]").
func (a InteractiveArgs) checkPrompts() error {
	p := generation.Inputs(a.Prompts)
	if p.Len() == 0 {
		return nil
	}
	switch {
	case a.Body.Prompt != "":
		return promptError("prompt", "given twice (body.prompt and prompts)")
	case a.Session != "" || a.Messages != nil:
		return promptError("prompt", "a list of prompts or token ids takes no session or messages (a session's turn is one text)")
	case p.Len()*a.perPrompt() > MaxInteractivePromptChoices:
		return promptError("prompt", "%d prompts with n = %d make %d choices, at most %d (prompts × n); more are batch work",
			p.Len(), a.perPrompt(), p.Len()*a.perPrompt(), MaxInteractivePromptChoices)
	}
	if err := p.Check("prompt"); err != nil {
		return err
	}
	for i, s := range p.Texts {
		if len(s) > MaxInteractivePromptBytes {
			return promptError(p.Param("prompt", i), "%d bytes, at most %d", len(s), MaxInteractivePromptBytes)
		}
	}
	for i, ids := range p.Tokens {
		for j, t := range ids {
			if t > model.EOTToken {
				return promptError(p.TokenParam("prompt", i, j), "token id %d outside the vocabulary [0, %d)", t, model.EOTToken+1)
			}
		}
	}
	return nil
}

// promptError is a refused prompt, naming param.
func promptError(param, format string, args ...any) *generation.RequestError {
	return &generation.RequestError{Code: generation.CodeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

// perPrompt is the number of choices a asks for each prompt (Body.N, 1
// when unset or, before Validate refuses it, below 1).
func (a InteractiveArgs) perPrompt() int {
	if a.Body.N == nil || *a.Body.N < 1 {
		return 1
	}
	return *a.Body.N
}

// Choices is the number of choices a asks for over all its prompts:
// prompts × n.
func (a InteractiveArgs) Choices() int { return max(a.Prompts.Len(), 1) * a.perPrompt() }

// prompts are a's prompts: Prompts, or the single text of Body.Prompt.
func (a InteractiveArgs) prompts() generation.Inputs {
	if a.Prompts.Len() > 0 {
		return generation.Inputs(a.Prompts)
	}
	return generation.Inputs{Texts: []string{a.Body.Prompt}, One: true}
}

// Prompts is the "prompt" of POST /v1/completions in any of OpenAI's forms
// (generation.Inputs): a string, a list of strings, a list of token ids or
// a list of lists of them. Decoding refuses more than
// MaxInteractivePromptChoices prompts, naming "prompt".
type Prompts generation.Inputs

// Len is the number of prompts.
func (p Prompts) Len() int { return generation.Inputs(p).Len() }

// UnmarshalJSON implements json.Unmarshaler; its errors are
// *generation.RequestError naming the prompt at fault.
func (p *Prompts) UnmarshalJSON(b []byte) error {
	v, err := generation.DecodeInputs(b, "prompt", MaxInteractivePromptChoices)
	*p = Prompts(v)
	return err
}

// MarshalJSON implements json.Marshaler: the form the prompts came in.
func (p Prompts) MarshalJSON() ([]byte, error) { return generation.Inputs(p).MarshalJSON() }

// ChoiceID is the loop record id of choice k of interactive generation id,
// the id feedback names: id itself for choice 0 (the only one when n = 1),
// and id, "-" and k for the others. With several prompts k is the choice's
// index over all of them (prompt i's choice j is i*n+j), as in the answer.
func ChoiceID(id string, k int) string {
	if k == 0 {
		return id
	}
	return id + "-" + strconv.Itoa(k)
}

// NewChatCompletionID returns a fresh chat completion id ("chatcmpl-" and
// 24 hex digits), usable where NewCompletionID's ids are.
func NewChatCompletionID() string {
	return "chat" + NewCompletionID()
}

// NewCompletionID returns a fresh completion id ("cmpl-" and 24 hex
// digits), usable as a subject token, task id and loop record id.
func NewCompletionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "cmpl-" + hex.EncodeToString(b[:])
}

// InteractiveWorker runs interactive generations.
type InteractiveWorker struct{ Deps *Deps }

// Work implements pipeline.Worker. A cancel from the client ends the
// generation as finished ("cancelled", recorded, no retry); a failure sends
// an error message and fails the job.
func (w InteractiveWorker) Work(ctx context.Context, job *pipeline.Job[InteractiveArgs]) error {
	bus := w.Deps.Bus
	if bus == nil {
		return pipeline.Permanent(errors.New("interactive generation streams over NATS: start the worker with TANDEM_NATS_URL"))
	}
	a := job.Args
	start := time.Now()
	genCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := tokenstream.StartWriter(bus, a.ID, a.StreamKey, cancel, w.Deps.Logger)
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := runInteractive(genCtx, w.Deps, a, st.Token)
	if err != nil && !st.Cancelled() {
		fault := faultOf(err, ctx.Err())
		if fault.Message != err.Error() {
			w.Deps.Logger.Error("interactive: generation failed", "id", a.ID, "err", err)
		}
		var ie *interactiveError
		if errors.As(err, &ie) && fault.Code == ie.code {
			err = pipeline.Permanent(err)
		}
		_ = st.Send(tokenstream.Message{Type: tokenstream.TypeError, Error: fault})
		return err
	}
	if err != nil {
		for i := range res.Choices {
			res.Choices[i].FinishReason = FinishCancelled
		}
	}
	// The records and the session turn are written before the done
	// message, so a client that reads done can give feedback at once.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	w.remember(wctx, a, res)
	first := res.Choices[0]
	done := tokenstream.Message{Type: tokenstream.TypeDone, FinishReason: first.FinishReason, Model: a.Body.Model,
		Usage:  &generation.Usage{PromptTokens: res.PromptTokens, CompletionTokens: res.CompletionTokens, TotalTokens: res.PromptTokens + res.CompletionTokens},
		Timing: &tokenstream.Timing{ModelFirstTokenMS: ms(res.FirstToken), TotalMS: ms(time.Since(start))}}
	for i, c := range res.Choices {
		done.Choices = append(done.Choices, tokenstream.Choice{Index: i, FinishReason: c.FinishReason, CompletionTokens: c.CompletionTokens})
	}
	// Readers join the token texts; done repeats the text of a single
	// choice only when the message stays within MaxEventBytes (a long
	// reply of long tokens does not), for readers that still take it from
	// there.
	if len(res.Choices) == 1 {
		done.Text = first.Text
		if b, err := json.Marshal(done); err != nil || len(b) > pipeline.MaxEventBytes {
			done.Text = ""
		}
	}
	if err := st.End(done); err != nil {
		return err
	}
	if st.Lost() > 0 {
		w.Deps.Logger.Warn("interactive: token messages not published", "id", a.ID, "lost", st.Lost())
	}
	return keepResult(job.ResultWriter, map[string]any{"id": a.ID, "finish_reason": first.FinishReason, "choices": len(res.Choices), "completion_tokens": res.CompletionTokens})
}

// remember saves a loop record per choice (ChoiceID) and, for a session
// turn that finished, appends it to the session (or puts it in the place
// of the turn it regenerates). Failures are logged: the person has the
// text, and the stream must still end.
func (w InteractiveWorker) remember(ctx context.Context, a InteractiveArgs, res interactiveResult) {
	if w.Deps.Redis == nil {
		return
	}
	store := loop.NewStore(w.Deps.Redis, loop.StoreOptions{})
	for i, c := range res.Choices {
		rec := loop.Generation{ID: ChoiceID(a.ID, i), User: a.Body.User, Session: a.Session, Model: a.Body.Model, Template: a.Template, Topic: a.Topic,
			Prompt: res.promptOf(i / a.perPrompt()), Text: c.Text, Tokens: c.CompletionTokens, FinishReason: c.FinishReason, Source: SourceInteractive}
		if err := store.Save(ctx, rec); err != nil {
			w.Deps.Logger.Error("interactive: loop record not saved", "id", rec.ID, "err", err)
		}
	}
	// A session takes n = 1 (Validate): its turn is the only choice.
	first := res.Choices[0]
	if a.Session == "" || first.FinishReason == FinishCancelled {
		return
	}
	turn := loop.Turn{Prompt: a.turnPrompt(), Reply: first.Text, GenerationID: a.ID}
	sessions := loop.NewSessionStore(w.Deps.Redis, loop.SessionOptions{})
	var err error
	if a.Replaces != "" {
		_, err = sessions.Replace(ctx, a.Session, a.Replaces, turn)
	} else {
		_, err = sessions.Append(ctx, a.Session, turn)
	}
	if err != nil {
		w.Deps.Logger.Warn("interactive: turn not added to its session", "id", a.ID, "session", a.Session, "err", err)
	}
}

// turnPrompt is what the person wrote in a's session turn: the prompt, or
// a chat's last user message.
func (a InteractiveArgs) turnPrompt() string {
	for i := len(a.Messages) - 1; i >= 0; i-- {
		if a.Messages[i].Role == generation.RoleUser {
			return string(a.Messages[i].Content)
		}
	}
	return a.Body.Prompt
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// msgWorkerFailed is what a client hears of a failure it did not cause;
// the cause, which can name the worker's hosts and paths, is logged.
const msgWorkerFailed = "the worker could not complete the generation; try again later"

// faultOf is the error a client is sent for err, a failed generation
// (ctxErr is the job context's error): the reason itself when the request
// caused it (a model that is not there, a prompt too long, bad sampling
// settings), and otherwise msgWorkerFailed.
func faultOf(err, ctxErr error) *tokenstream.Fault {
	var ie *interactiveError
	switch {
	case errors.As(err, &ie) && ie.code != tokenstream.CodeModel:
		f := &tokenstream.Fault{Code: ie.code, Message: err.Error()}
		var fe *generation.ChatFieldError
		var re *generation.RequestError
		switch {
		case errors.As(err, &fe):
			f.Param = fe.Param
		case errors.As(err, &re):
			f.Param = re.Param
		}
		return f
	case errors.As(err, &ie) && generation.IsModelNotFound(err):
		return &tokenstream.Fault{Code: tokenstream.CodeModel, Message: err.Error()}
	case errors.Is(ctxErr, context.DeadlineExceeded):
		return &tokenstream.Fault{Code: tokenstream.CodeTimeout, Message: msgWorkerFailed}
	}
	return &tokenstream.Fault{Code: tokenstream.CodeFailed, Message: msgWorkerFailed}
}

// interactiveError is a failure the input caused; it is not retried.
type interactiveError struct {
	code string
	err  error
}

func (e *interactiveError) Error() string { return e.err.Error() }
func (e *interactiveError) Unwrap() error { return e.err }

// interactiveResult is what one generation produced. On cancellation each
// choice's Text and CompletionTokens hold what was generated until then.
type interactiveResult struct {
	Prompts          []string // what the model was given, per prompt
	Choices          []choiceResult
	PromptTokens     int
	CompletionTokens int           // of every choice
	FirstToken       time.Duration // see tokenstream.Timing.ModelFirstTokenMS
	DroppedTurns     int           // history turns (chat messages) left out to fit the context
	composeTime      time.Duration
}

// promptOf is the text of prompt i, or "" when the generation ended
// before its prompts were composed.
func (r interactiveResult) promptOf(i int) string {
	if i < len(r.Prompts) {
		return r.Prompts[i]
	}
	return ""
}

// choiceResult is one choice of an interactiveResult.
type choiceResult struct {
	Text             string
	FinishReason     string
	CompletionTokens int
}

// tokenFunc gets each generated token of a choice with the text it made
// final and, when the generation asked for them, its log probabilities.
type tokenFunc func(choice int, tok int32, text string, lp *generation.LogprobEntry)

// runInteractive generates a's completion, calling onToken for every token
// of every choice. Its prompts are submitted to the engine in one call, so
// they are prefilled and decoded together.
func runInteractive(ctx context.Context, d *Deps, a InteractiveArgs, onToken tokenFunc) (interactiveResult, error) {
	res := interactiveResult{Choices: make([]choiceResult, a.Choices())}
	n := a.perPrompt()
	lm, err := d.Models.Get(a.Body.Model)
	if err != nil {
		return res, &interactiveError{tokenstream.CodeModel, err}
	}
	tok, err := d.Models.Tokenizer()
	if err != nil {
		return res, err
	}
	params, err := a.Body.Params()
	if err != nil {
		return res, &interactiveError{tokenstream.CodeFailed, err}
	}
	t0 := time.Now()
	prompts, err := composePrompts(tok, lm.Model.Config, a, lm.Chat, params.MaxTokens, &res)
	if err != nil {
		return res, err
	}
	switch {
	case a.Messages != nil:
		lm.Chat.AddStop(&params)
	case a.Session != "" && len(params.Stop) < model.MaxStopSequences:
		params.Stop = append(params.Stop, loop.TurnStop)
	}
	res.composeTime = time.Since(t0)
	reqs := make([]model.Request, len(prompts))
	for i, ids := range prompts {
		reqs[i] = model.Request{Prompt: ids, Params: params}
		res.PromptTokens += len(ids)
	}
	texts := make([]strings.Builder, len(res.Choices))
	t1 := time.Now()
	// The engine calls OnLogprobs just before OnToken for the same token.
	var lp *generation.LogprobEntry
	opts := generation.Options{Class: generation.Interactive}
	if params.Logprobs > 0 {
		opts.OnLogprobs = func(_, _ int, t model.TokenLogprobs) {
			e := generation.NewLogprobEntry(tok, t)
			lp = &e
		}
	}
	opts.OnToken = func(req, choice int, t int32, piece string) {
		if res.CompletionTokens == 0 {
			res.FirstToken = res.composeTime + time.Since(t1)
		}
		i := req*n + choice
		res.CompletionTokens++
		res.Choices[i].CompletionTokens++
		piece = validUTF8(piece)
		texts[i].WriteString(piece)
		onToken(i, t, piece, lp)
		lp = nil
	}
	comps, err := lm.Engine.Generate(ctx, reqs, opts)
	// The texts are the streamed pieces joined, so what was sent, recorded
	// and kept in the session are the same.
	for i := range res.Choices {
		res.Choices[i].Text = texts[i].String()
	}
	if err != nil {
		return res, err
	}
	res.CompletionTokens = 0
	for r, cs := range comps {
		for k, c := range cs {
			i := r*n + k
			res.Choices[i].FinishReason, res.Choices[i].CompletionTokens = c.FinishReason, c.CompletionTokens
			res.CompletionTokens += c.CompletionTokens
		}
	}
	return res, nil
}

// validUTF8 replaces each byte of s that is not part of a valid UTF-8
// character with U+FFFD, as encoding/json does. The model's text is bytes:
// a random or small model can emit stray continuation bytes, and a reply
// cut at max_tokens can end inside a character.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// composePrompts tokenises a's prompts and checks each against the model
// (cfg): token ids in its vocabulary, room in its context for at least one
// token. A single text, a chat or a session is composePrompt's. The texts
// go to res.Prompts (token ids decoded), for the records.
func composePrompts(tok *model.Tokenizer, cfg model.Config, a InteractiveArgs, chat generation.ChatFormat, maxTokens int, res *interactiveResult) ([][]int32, error) {
	if a.Prompts.Len() == 0 {
		ids, err := composePrompt(tok, cfg.NPositions, a, chat, maxTokens, res)
		return [][]int32{ids}, err
	}
	in := a.prompts()
	out := make([][]int32, 0, in.Len())
	res.Prompts = make([]string, 0, in.Len())
	for _, s := range in.Texts {
		out = append(out, tok.Encode(s))
		res.Prompts = append(res.Prompts, s)
	}
	for i, ids := range in.Tokens {
		for j, t := range ids {
			if int(t) >= cfg.VocabSize {
				return nil, &interactiveError{tokenstream.CodeInvalid, promptError(in.TokenParam("prompt", i, j), "token id %d outside the vocabulary of model %s [0, %d)", t, a.Body.Model, cfg.VocabSize)}
			}
		}
		out = append(out, ids)
		res.Prompts = append(res.Prompts, validUTF8(tok.Decode(ids)))
	}
	for i, ids := range out {
		if err := fitsContext(in.Param("prompt", i), len(ids), cfg.NPositions); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fitsContext refuses a prompt (field names it) of n tokens that leaves no
// room for a completion in a context of nPositions.
func fitsContext(field string, n, nPositions int) error {
	if n <= nPositions-1 {
		return nil
	}
	return &interactiveError{tokenstream.CodeContext, &generation.RequestError{Code: tokenstream.CodeContext, Param: field,
		Message: fmt.Sprintf("%d tokens; the model's context holds %d (at most %d leave room for a completion)", n, nPositions, nPositions-1)}}
}

// composePrompt tokenises a's prompt: the raw prompt; a chat's messages
// written in the model's chat format (after a session's prefix), the
// oldest left out until prompt and maxTokens fit the context
// (generation.TrimChat); or for a session the transcript with the oldest
// turns dropped until prompt and maxTokens fit the context. A prompt that
// cannot fit even so, leaving a token for the reply, is refused; one that
// fits without all of maxTokens gets the room that is left.
func composePrompt(tok *model.Tokenizer, nPositions int, a InteractiveArgs, chat generation.ChatFormat, maxTokens int, res *interactiveResult) ([]int32, error) {
	budget := max(nPositions-maxTokens, 1)
	if a.Messages != nil {
		render := func(msgs []generation.ChatMessage) string { return a.Prefix + chat.Render(msgs) }
		kept, dropped := generation.TrimChat(a.Messages, budget, func(msgs []generation.ChatMessage) int { return len(tok.Encode(render(msgs))) })
		res.Prompts, res.DroppedTurns = []string{render(kept)}, dropped
		ids := tok.Encode(res.Prompts[0])
		if len(ids) > nPositions-1 {
			return nil, &interactiveError{tokenstream.CodeContext, &generation.ChatFieldError{Param: "messages", Msg: fmt.Sprintf(
				"%d tokens with only the system messages and the last user message kept; the model's context holds %d (at most %d leave room for a reply)", len(ids), nPositions, nPositions-1)}}
		}
		return ids, nil
	}
	if a.Session == "" {
		res.Prompts = []string{a.Body.Prompt}
		ids := tok.Encode(a.Body.Prompt)
		if err := fitsContext("prompt", len(ids), nPositions); err != nil {
			return nil, err
		}
		return ids, nil
	}
	for drop := 0; ; drop++ {
		text := loop.Transcript(a.Prefix, a.History[drop:], a.Body.Prompt)
		res.Prompts = []string{text}
		ids := tok.Encode(text)
		if len(ids) <= budget || drop == len(a.History) {
			res.DroppedTurns = drop
			if len(ids) > nPositions-1 {
				return nil, &interactiveError{tokenstream.CodeContext, &generation.RequestError{Code: tokenstream.CodeContext, Param: "prompt",
					Message: fmt.Sprintf("%d tokens with the session's instructions and no history; the model's context holds %d", len(ids), nPositions)}}
			}
			return ids, nil
		}
	}
}

// execInteractive is `worker exec generate:interactive`: one prompt,
// generated in-process with the tokens written to stdout as they come.
func execInteractive(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec "+KindInteractive, flag.ContinueOnError)
	a := InteractiveArgs{ID: NewCompletionID(), StreamKey: pipeline.NewSealKey()}
	maxTokens := fs.Int("max-tokens", generation.DefaultMaxTokens, "tokens to generate at most")
	temperature := fs.Float64("temperature", 1, "sampling temperature; 0 is greedy")
	fs.StringVar(&a.Body.Model, "model", "builtin:tiny", "model: registered name, directory or builtin:tiny|builtin:small")
	fs.StringVar(&a.Body.Prompt, "prompt", "", "the prompt (required)")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	t := float32(*temperature)
	a.Body.MaxTokens, a.Body.Temperature = maxTokens, &t
	if err := a.Validate(); err != nil {
		return err
	}
	var werr error
	res, err := runInteractive(ctx, d, a, func(_ int, _ int32, text string, _ *generation.LogprobEntry) {
		if _, err := io.WriteString(stdout, text); err != nil && werr == nil {
			werr = err
		}
	})
	if err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	_, err = fmt.Fprintf(stdout, "\n[finish_reason=%s tokens=%d]\n", res.Choices[0].FinishReason, res.CompletionTokens)
	return err
}

// PublicPayload returns a task's payload as an API client may see it: an
// interactive generation's stream key is left out (whoever holds it could
// write into the reply). Other kinds come back unchanged.
func PublicPayload(kind string, payload []byte) []byte {
	if kind != KindInteractive {
		return payload
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(payload, &m) != nil {
		return nil
	}
	delete(m, "stream_key")
	b, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}
