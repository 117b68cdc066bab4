package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/loop"
)

// chatHelp is what `producer chat` says about its commands (/help, usage).
const chatHelp = `One line is one prompt; the reply streams back. Commands act on the last
reply, or on reply #N (replies are numbered from 1 in this session):
  /accept [#N]       the reply is good as it is
  /reject [#N]       the reply is not wanted
  /rate [#N] R       rate it R, an integer from 1 to 5
  /edit [#N] TEXT    TEXT is what the reply should have said
  /regenerate        "regenerate" feedback on the last reply (not sent without
                     a user), then the same prompt again with a new seed; the
                     new reply takes its place
  /help              this text
  /quit              end (so does the end of the input)
Feedback goes through POST /v1/generations/{id}/feedback to the recommender
(the template or topic of the chat), the loop metrics and the fine-tune
dataset. Each action counts once per reply and a repeat is not sent, but
rating a reply again replaces its rating: the latest one counts.`

// chat is one `producer chat` conversation.
type chat struct {
	api            *apiClient
	req            completionRequest // the next completion, less its prompt
	replies        []chatReply       // reply #N is replies[N-1]
	stdout, stderr io.Writer
	tty            bool
}

// chatReply is one reply the person can give feedback on.
type chatReply struct {
	id     string // the generation (completion) id
	prompt string
	// sent holds the feedback actions sent on it, with the rating of
	// feedback.ActionRate.
	sent map[string]float64
}

// maxSessionView bounds GET /v1/sessions/{id}: the largest session a store
// keeps, with room for JSON escapes.
const maxSessionView = 8*loop.MaxSessionBytes + 64<<10

// resume loads the replies an existing session holds, numbering them.
func (c *chat) resume(ctx context.Context, id string) error {
	var s sessionView
	if err := c.api.getJSON(ctx, "/v1/sessions/"+url.PathEscape(id), maxSessionView, &s); err != nil {
		return fmt.Errorf("session %s: %w", id, err)
	}
	for _, t := range s.Turns {
		if t.GenerationID != "" {
			c.replies = append(c.replies, chatReply{id: t.GenerationID, prompt: t.Prompt})
		}
	}
	fmt.Fprintf(c.stderr, "session %s: %d earlier replies\n", id, len(c.replies))
	return nil
}

// handle acts on one non-empty input line: a command, or a prompt to send.
// quit is true after /quit.
func (c *chat) handle(ctx context.Context, line string) (quit bool, err error) {
	if !strings.HasPrefix(line, "/") {
		return false, c.ask(ctx, line, "")
	}
	name, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	switch name {
	case "/quit", "/exit":
		return true, nil
	case "/help":
		fmt.Fprintln(c.stderr, chatHelp)
		return false, nil
	case "/accept", "/reject", "/rate", "/edit", "/regenerate":
	default:
		return false, fmt.Errorf("unknown command %.32q; /help lists them", name)
	}
	n, arg, err := c.replyRef(rest)
	if err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	fb := loop.Feedback{Action: strings.TrimPrefix(name, "/")}
	switch fb.Action {
	case feedback.ActionRate:
		r, err := strconv.Atoi(arg)
		if err != nil {
			return false, fmt.Errorf("/rate: %.32q is not a rating; /rate [#N] R with R from %d to %d", arg, feedback.MinRating, feedback.MaxRating)
		}
		fb.Value = float64(r)
	case feedback.ActionEdit:
		fb.EditedText = arg
	default:
		if arg != "" {
			return false, fmt.Errorf("%s: unexpected %.32q (only a reply number #N may follow)", name, arg)
		}
	}
	if err := fb.Validate(); err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	if fb.Action == feedback.ActionRegenerate {
		return false, c.regenerate(ctx, n)
	}
	return false, c.feedback(ctx, n, fb)
}

// replyRef reads an optional "#N" at the start of rest and checks that the
// reply exists; without one it is the last reply. arg is the rest.
func (c *chat) replyRef(rest string) (n int, arg string, err error) {
	if len(c.replies) == 0 {
		return 0, "", fmt.Errorf("no reply yet")
	}
	n = len(c.replies)
	if ref, ok := strings.CutPrefix(rest, "#"); ok {
		num, after, _ := strings.Cut(ref, " ")
		n, err = strconv.Atoi(num)
		if err != nil || n < 1 || n > len(c.replies) {
			return 0, "", fmt.Errorf("no reply #%.16s (replies are #1 to #%d)", num, len(c.replies))
		}
		rest = strings.TrimSpace(after)
	}
	return n, rest, nil
}

// feedback sends fb on reply #n, unless the same action was sent before
// (the API would take it as a resend of the first one and drop it). A
// rating with another value is sent: the API publishes it as a revision
// that replaces the earlier rating.
func (c *chat) feedback(ctx context.Context, n int, fb loop.Feedback) error {
	r := &c.replies[n-1]
	if prev, ok := r.sent[fb.Action]; ok {
		switch {
		case fb.Action != feedback.ActionRate:
			fmt.Fprintf(c.stderr, "reply #%d already has %q feedback, which counts once; not sent\n", n, fb.Action)
			return nil
		case prev == fb.Value:
			fmt.Fprintf(c.stderr, "reply #%d is already rated %g; not sent\n", n, prev)
			return nil
		}
	}
	var v feedbackView
	if err := c.api.postJSON(ctx, "/v1/generations/"+url.PathEscape(r.id)+"/feedback", fb, maxFeedbackBody, &v); err != nil {
		return fmt.Errorf("feedback on reply #%d: %w", n, err)
	}
	if r.sent == nil {
		r.sent = map[string]float64{}
	}
	r.sent[fb.Action] = fb.Value
	what := fb.Action
	if fb.Action == feedback.ActionRate {
		if v.Unchanged { // rated so elsewhere, e.g. before this chat resumed the session
			fmt.Fprintf(c.stderr, "reply #%d is already rated %g; nothing sent\n", n, fb.Value)
			return nil
		}
		what = fmt.Sprintf("rating %g", fb.Value)
		if v.Revision > 0 {
			what += fmt.Sprintf(" in place of %g", v.Previous)
		}
	}
	item := ""
	if v.Item != "" {
		item = " on " + v.Item
	}
	fmt.Fprintf(c.stderr, "reply #%d: %s sent (%s event%s, id %s)\n", n, what, v.Event, item, v.ID)
	return nil
}

// regenerate sends "regenerate" feedback on reply #n, which must be the
// last one, and asks its prompt again with a new seed; the new reply takes
// reply #n's number and, in the session, its turn.
func (c *chat) regenerate(ctx context.Context, n int) error {
	if n != len(c.replies) {
		return fmt.Errorf("/regenerate: only the last reply (#%d) can be regenerated", len(c.replies))
	}
	// The feedback is a side effect: a chat without a user (no --user, and
	// a session without one) cannot send any, but still wants the reply.
	if err := c.feedback(ctx, n, loop.Feedback{Action: feedback.ActionRegenerate}); err != nil {
		var he *httpError
		if !errors.As(err, &he) || he.code != codeNoUser {
			return err
		}
		fmt.Fprintf(c.stderr, "reply #%d: regenerate feedback not sent (this chat has no user; start it with --user to send feedback); regenerating anyway\n", n)
	}
	r := c.replies[n-1]
	return c.ask(ctx, r.prompt, r.id)
}

// ask streams the reply to prompt and numbers it; replaces, when set, is
// the generation id of the last reply, which the new one takes the place
// of (with a fresh seed, so the text differs).
func (c *chat) ask(ctx context.Context, prompt, replaces string) error {
	req := c.req
	req.Prompt, req.Replaces = jobs.Prompts{Texts: []string{prompt}, One: true}, replaces
	n := len(c.replies) + 1
	if replaces != "" {
		seed := rand.Int64()
		req.Seed = &seed
		n = len(c.replies)
	}
	if c.tty {
		fmt.Fprintf(c.stderr, "#%d ", n)
	}
	id, err := chatTurn(ctx, c.api, req, c.stdout)
	if err != nil {
		return err
	}
	reply := chatReply{id: id, prompt: prompt}
	if replaces != "" {
		c.replies[n-1] = reply
		fmt.Fprintf(c.stderr, "reply #%d regenerated\n", n)
	} else {
		c.replies = append(c.replies, reply)
	}
	return nil
}
