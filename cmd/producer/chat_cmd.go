package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// chatStdin is where `producer chat` reads the person's lines; tests pipe
// into it.
var chatStdin io.Reader = os.Stdin

// maxSSELine bounds one line of a server-sent event stream the chat reads.
const maxSSELine = 1 << 20

// apiClient calls the producer's HTTP API with a bearer token.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

// apiFlags adds the flags every HTTP client command shares.
func apiFlags(fs *flag.FlagSet) *apiClient {
	c := &apiClient{http: &http.Client{}}
	fs.StringVar(&c.base, "url", envOr("TANDEM_API_URL", "http://127.0.0.1:8080"), "base URL of the producer's HTTP API [TANDEM_API_URL]")
	fs.StringVar(&c.token, "token", envOr("TANDEM_API_TOKEN", ""), "bearer token for the API (prefer the environment variable) [TANDEM_API_TOKEN]")
	return c
}

// post sends v as JSON and returns the response; a non-2xx answer is an
// error carrying the API's message.
func (c *apiClient) post(ctx context.Context, path string, v any) (*http.Response, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, path, bytes.NewReader(body))
}

// getJSON reads path's JSON answer into v, at most limit bytes of it.
func (c *apiClient) getJSON(ctx context.Context, path string, limit int64, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(v)
}

// postJSON sends v and reads the JSON answer into out, at most limit
// bytes of it.
func (c *apiClient) postJSON(ctx context.Context, path string, v any, limit int64, out any) error {
	resp, err := c.post(ctx, path, v)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(out)
}

// do sends one request; a non-2xx answer is an *httpError carrying the
// API's message.
func (c *apiClient) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.base, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e apiError
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return nil, &httpError{status: resp.StatusCode, code: e.Error.Code, msg: e.Error.Message}
		}
		return nil, &httpError{status: resp.StatusCode, msg: strings.TrimSpace(string(b))}
	}
	return resp, nil
}

// httpError is a non-2xx answer of the API.
type httpError struct {
	status int
	code   string // the API's error code, when it sent one
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.msg) }

// readSSE calls fn with the data of each event of a server-sent event
// stream until "data: [DONE]", the end of the stream, or an error of fn.
// Lines longer than maxSSELine are an error.
func readSSE(r io.Reader, fn func(data []byte) error) error {
	br := bufio.NewReader(r)
	for {
		line, tooLong, err := generation.ReadBoundedLine(br, maxSSELine)
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF // the stream ended before [DONE]
		}
		if err != nil {
			return err
		}
		if tooLong {
			return fmt.Errorf("event stream: a line over %d bytes", maxSSELine)
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue // blank separators, comments, other fields
		}
		if string(data) == "[DONE]" {
			return nil
		}
		if err := fn(data); err != nil {
			return err
		}
	}
}

// cmdChat is `producer chat`: reads lines from standard input, streams each
// reply to standard output as its tokens arrive, and keeps the
// conversation in one session. Lines starting with "/" are commands
// (chatHelp): feedback on a reply, regenerate, help, quit.
func cmdChat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("producer chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := apiFlags(fs)
	modelName := fs.String("model", envOr("TANDEM_CHAT_MODEL", "builtin:tiny"), "model: registered name, directory or builtin:tiny [TANDEM_CHAT_MODEL]")
	sessionID := fs.String("session", "", "continue this session (default: create one)")
	user := fs.String("user", "", "user id, for the session and the feedback loop (feedback needs one); with a token, default its own user, and another needs the impersonate right")
	instructions := fs.String("instructions", "", `standing instructions of a new session, e.g. "length: short; tone: formal"`)
	maxTokens := fs.Int("max-tokens", 0, "tokens per reply at most (0: the session's length, else 16)")
	temperature := fs.Float64("temperature", -1, "sampling temperature (negative: the session's creativity, else 1)")
	template := fs.String("template", "", "template id the conversation is about (recorded for feedback)")
	topic := fs.String("topic", "", "topic id the conversation is about (recorded for feedback)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: producer chat [flags] < lines\n\n%s\n\nflags:\n", chatHelp)
		fs.PrintDefaults()
	}
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if *maxTokens < 0 || *maxTokens > jobs.MaxInteractiveTokens {
		return fmt.Errorf("--max-tokens: %d out of range [0, %d]", *maxTokens, jobs.MaxInteractiveTokens)
	}
	c := &chat{api: api, stdout: stdout, stderr: stderr, tty: isTerminal(chatStdin)}
	if *sessionID == "" {
		var s sessionView
		if err := api.postJSON(ctx, "/v1/sessions", createSessionRequest{User: *user, Instructions: *instructions}, maxCompletionBody, &s); err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		*sessionID = s.ID
		fmt.Fprintf(stderr, "session %s\n", s.ID)
	} else {
		if *instructions != "" {
			return errors.New("--instructions: only for a new session (leave out --session)")
		}
		if err := c.resume(ctx, *sessionID); err != nil {
			return err
		}
	}
	c.req = completionRequest{Stream: true, Session: *sessionID, Template: *template, Topic: *topic}
	c.req.Model, c.req.User = *modelName, *user
	if *maxTokens > 0 {
		c.req.MaxTokens = maxTokens
	}
	if *temperature >= 0 {
		t := float32(*temperature)
		c.req.Temperature = &t
	}
	in := bufio.NewReader(chatStdin)
	for {
		if c.tty {
			fmt.Fprint(stderr, "> ")
		}
		line, tooLong, err := generation.ReadBoundedLine(in, jobs.MaxInteractivePromptBytes)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if tooLong {
			fmt.Fprintf(stderr, "line over %d bytes: not sent\n", jobs.MaxInteractivePromptBytes)
			continue
		}
		text := strings.TrimSpace(string(line))
		if text == "" {
			continue
		}
		quit, err := c.handle(ctx, text)
		if err != nil {
			var he *httpError
			if ctx.Err() != nil || errors.As(err, &he) && (he.status == http.StatusUnauthorized || he.status == http.StatusForbidden) {
				return err
			}
			fmt.Fprintf(stderr, "error: %v\n", err)
		}
		if quit {
			return nil
		}
	}
}

// chatTurn sends one streamed completion and writes its text as it comes,
// then a newline; it returns the completion (generation) id.
func chatTurn(ctx context.Context, api *apiClient, req completionRequest, stdout io.Writer) (id string, err error) {
	resp, err := api.post(ctx, "/v1/completions", req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	err = readSSE(resp.Body, func(data []byte) error {
		var c completionChunk
		if err := json.Unmarshal(data, &c); err != nil {
			return fmt.Errorf("event stream: %w", err)
		}
		if c.Error != nil {
			return fmt.Errorf("%s: %s", c.Error.Code, c.Error.Message)
		}
		id = c.ID
		for _, ch := range c.Choices {
			if _, err := io.WriteString(stdout, ch.Text); err != nil {
				return err
			}
		}
		return nil
	})
	_, _ = io.WriteString(stdout, "\n")
	return id, err
}
