// Command demo runs the whole Tandem pipeline on its embedded defaults: a
// local Redis (the machine's, or a private one), an in-process nats-server
// hosted by the scheduler, a worker, and producer commands that submit one
// job of each kind and follow them to their results. `make demo` runs it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ai/tandem/pipeline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo finished: every part started, ran its job and shut down cleanly")
}

// demo holds the state of one run.
type demo struct {
	dir, bin string
	files    string // the data root: every file a job names is in here
	state    string // the data dir: the services' own state, NATS passwords included
	env      []string
	// natsRoles: the scheduler hosts NATS, which admits only Tandem's
	// roles; envFor hands each binary its role and password file.
	natsRoles bool
	procs     []*exec.Cmd
	api       string // base URL of `producer serve`, once the loop step started it
}

func run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	d := &demo{dir: filepath.Join(root, ".tandem", "demo"), bin: filepath.Join(root, "bin")}
	d.files, d.state = filepath.Join(d.dir, "files"), filepath.Join(d.dir, "state")
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	for _, sub := range []string{filepath.Join(d.dir, "logs"), d.files} {
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
	}
	defer d.stopAll()
	// The scheduler's live recommender loads this file at start.
	if err := writeDemoInteractions(d.files); err != nil {
		return err
	}

	step("1. services")
	// Without TANDEM_REDIS_URL the demo runs on a private redis-server
	// under its own directory, which is wiped at every start: each run
	// starts from nothing and leaves nobody else's data touched.
	redisURL := os.Getenv("TANDEM_REDIS_URL")
	redisDir := filepath.Join(root, ".tandem")
	if redisURL == "" {
		redisDir = d.dir
	}
	redisURL, stopRedis, err := pipeline.EnsureRedis(ctx, redisURL, redisDir, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer stopRedis()
	fmt.Println("   redis:", redisURL)
	if err := resetRecs(ctx, redisURL); err != nil {
		return err
	}

	natsURL := os.Getenv("TANDEM_NATS_URL")
	schedAdmin, workerAdmin := freeAddr(), freeAddr()
	// The job files (prompts, results, corpus, run directories) live in
	// d.files, the data root every job path is confined to; the services'
	// own state (registry, artifacts) stays in the data dir beside it. A
	// data root inside the data dir is refused, so the two are siblings.
	d.env = append(os.Environ(), "TANDEM_REDIS_URL="+redisURL, "TANDEM_DATA_DIR="+d.state, "TANDEM_DATA_ROOT="+d.files)
	schedArgs := []string{"--admin-addr", schedAdmin, "--interactions", demoInteractions(d.files)}
	if natsURL == "" {
		natsAddr := freeAddr()
		natsURL = "nats://" + natsAddr
		schedArgs = append(schedArgs, "--embedded-nats", natsAddr)
		d.natsRoles = true
		fmt.Println("   nats:  in-process nats-server inside the scheduler at", natsURL)
		fmt.Println("          (a login per role; passwords in", pipeline.NATSCredentialsDir(d.state)+")")
	} else {
		fmt.Println("   nats: ", natsURL)
	}
	d.env = append(d.env, "TANDEM_NATS_URL="+natsURL)
	// The scheduler must host NATS before the others connect.
	if err := d.start(ctx, "scheduler", schedArgs...); err != nil {
		return err
	}
	if err := waitHealthy(ctx, schedAdmin); err != nil {
		return fmt.Errorf("scheduler: %w (see %s)", err, d.logPath("scheduler"))
	}
	if err := d.start(ctx, "worker", "--admin-addr", workerAdmin, "--concurrency", "2"); err != nil {
		return err
	}
	if err := waitHealthy(ctx, workerAdmin); err != nil {
		return fmt.Errorf("worker: %w (see %s)", err, d.logPath("worker"))
	}
	fmt.Printf("   scheduler and worker up (logs in %s)\n", filepath.Join(d.dir, "logs"))

	step("2. generation through the queue (producer -> Redis -> worker)")
	prompts := filepath.Join(d.files, "prompts.jsonl")
	if err := writeDemoPrompts(prompts); err != nil {
		return err
	}
	genOut := filepath.Join(d.files, "results.jsonl")
	genID, err := d.enqueue(ctx, "generate", map[string]any{"model": "builtin:tiny", "input": prompts, "output": genOut, "batch_size": 4})
	if err != nil {
		return err
	}
	if err := d.follow(ctx, genID); err != nil {
		return err
	}
	if err := showResults(genOut); err != nil {
		return err
	}

	step("3. evaluation through the queue")
	text := filepath.Join(d.files, "eval.txt")
	if err := os.WriteFile(text, []byte(demoText), 0o644); err != nil {
		return err
	}
	evalID, err := d.enqueue(ctx, "eval", map[string]any{"model": "builtin:tiny", "input": text})
	if err != nil {
		return err
	}
	if err := d.follow(ctx, evalID); err != nil {
		return err
	}

	if err := demoBatch(ctx, d); err != nil {
		return err
	}

	step("4. the same kinds in-process, no Redis: worker exec")
	out, err := d.output(ctx, "worker", "exec", "eval", "--model", "builtin:tiny", "--in", text)
	if err != nil {
		return err
	}
	fmt.Print("   worker exec eval -> ", out)
	// A path outside the data root is refused before anything is read.
	if _, err := d.output(ctx, "worker", "exec", "eval", "--model", "builtin:tiny", "--in", "../../../go.mod"); err == nil {
		return errors.New("worker exec eval read a file outside the data root")
	} else if msg := err.Error(); !strings.Contains(msg, "escapes the data root") {
		return fmt.Errorf("worker exec eval outside the data root: want an escape refused, got %w", err)
	} else {
		fmt.Println("   worker exec eval --in ../../../go.mod -> refused: escapes the data root", d.files)
	}

	step("6. queues")
	out, err = d.output(ctx, "producer", "queues")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))

	if err := demoRecs(ctx, d); err != nil {
		return err
	}
	if err := demoLoop(ctx, d); err != nil {
		return err
	}

	if err := demoFinetune(ctx, d); err != nil {
		return err
	}
	if err := demoInteractive(ctx, d); err != nil {
		return err
	}
	if err := demoPeopleFirst(ctx, d); err != nil {
		return err
	}

	step("7. shutdown")
	return d.stopAll()
}

const demoText = "The pipeline takes topics and templates, generates text in batches, and learns from what people accept. " +
	"Workers run a small transformer on the CPU; a scheduler runs the nightly jobs; events flow over NATS.\n"

func writeDemoPrompts(path string) error {
	topics := []string{"a product description for a rain jacket", "a support reply about a late parcel", "a headline about a city marathon", "a haiku about autumn", "a tweet announcing a bakery opening", "a one-line summary of a football match"}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for i, t := range topics {
		line := map[string]any{
			"custom_id": fmt.Sprintf("demo-%d", i+1), "method": "POST", "url": "/v1/completions",
			"body": map[string]any{"prompt": "Write " + t + ":", "max_tokens": 24, "temperature": 0.8, "top_p": 0.95, "seed": i},
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	// One bad line shows that errors are reported per line, not per file.
	_, err = f.WriteString(`{"custom_id":"demo-bad","method":"POST","url":"/v1/completions","body":{"prompt":"x","temperature":9}}` + "\n")
	return err
}

func showResults(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Println("   results:", path)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			CustomID string `json:"custom_id"`
			Response *struct {
				Body struct {
					Choices []struct {
						Text         string `json:"text"`
						FinishReason string `json:"finish_reason"`
					} `json:"choices"`
				} `json:"body"`
			} `json:"response"`
			Error *struct {
				Code, Message string
				Line          int
			} `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return err
		}
		switch {
		case l.Error != nil:
			fmt.Printf("   %-9s error on line %d: %s\n", l.CustomID, l.Error.Line, l.Error.Message)
		case l.Response != nil && len(l.Response.Body.Choices) > 0:
			c := l.Response.Body.Choices[0]
			fmt.Printf("   %-9s [%s] %q\n", l.CustomID, c.FinishReason, truncate(c.Text, 70))
		}
	}
	fmt.Println("   (builtin:tiny has random weights: the text is noise until a fine-tune trains it)")
	return sc.Err()
}

// envFor is the environment of binary name: the shared one, plus, when the
// scheduler hosts NATS, the login of the binary's role (the producer and the
// worker; the scheduler logs in to its own server by itself). The password
// files are the ones the scheduler wrote at its start.
func (d *demo) envFor(name string) []string {
	if !d.natsRoles || (name != pipeline.RoleProducer && name != pipeline.RoleWorker) {
		return d.env
	}
	return append(slices.Clip(d.env), "TANDEM_NATS_USER="+name,
		"TANDEM_NATS_PASSWORD_FILE="+filepath.Join(pipeline.NATSCredentialsDir(d.state), name))
}

func (d *demo) logPath(name string) string { return filepath.Join(d.dir, "logs", name+".log") }

func (d *demo) start(ctx context.Context, name string, args ...string) error {
	logf, err := os.Create(d.logPath(name))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(d.bin, name), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = d.envFor(name), logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	d.procs = append(d.procs, cmd)
	return nil
}

// stopAll sends SIGTERM to the children, newest first, and waits for each.
func (d *demo) stopAll() error {
	var errs []error
	for i := len(d.procs) - 1; i >= 0; i-- {
		cmd := d.procs[i]
		name := filepath.Base(cmd.Path)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("%s exited: %w (see %s)", name, err, d.logPath(name)))
			} else {
				fmt.Printf("   %s stopped cleanly\n", name)
			}
		case <-time.After(45 * time.Second):
			_ = cmd.Process.Kill()
			errs = append(errs, fmt.Errorf("%s did not stop within 45s", name))
		}
	}
	d.procs = nil
	return errors.Join(errs...)
}

func (d *demo) output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, name), args...)
	cmd.Env = d.envFor(name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func (d *demo) enqueue(ctx context.Context, kind string, args map[string]any) (string, error) {
	path := filepath.Join(d.dir, kind+"-args.json")
	b, _ := json.Marshal(args)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", err
	}
	out, err := d.output(ctx, "producer", "enqueue", kind, "--args", path)
	if err != nil {
		return "", err
	}
	var v struct{ ID, Queue string }
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return "", fmt.Errorf("producer enqueue: %w", err)
	}
	fmt.Printf("   producer enqueue %s -> job %s on queue %s\n", kind, v.ID, v.Queue)
	return v.ID, nil
}

// follow polls `producer status` until the job ends, showing its state.
func (d *demo) follow(ctx context.Context, id string) error {
	start, last := time.Now(), ""
	for {
		out, err := d.output(ctx, "producer", "status", id)
		if err != nil {
			return err
		}
		var v struct {
			State     string          `json:"state"`
			LastError string          `json:"last_error"`
			Result    json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return err
		}
		if v.State != last {
			fmt.Printf("   [%5.1fs] job %s: %s\n", time.Since(start).Seconds(), id, v.State)
			last = v.State
		}
		switch v.State {
		case "completed":
			if len(v.Result) > 0 {
				fmt.Printf("   result: %s\n", v.Result)
			}
			return nil
		case "archived":
			return fmt.Errorf("job %s archived: %s", id, v.LastError)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func waitHealthy(ctx context.Context, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("not healthy after 30s")
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func step(s string) { fmt.Println("\n==", s) }

func indent(s string) string {
	return "   " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n   ") + "\n"
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// demoBatch runs a templated batch end to end: a template and CSV rows go
// through `producer batch create --template --wait`, which validates them,
// enqueues one task per chunk, draws progress and prints where
// output.jsonl and errors.jsonl are.
func demoBatch(ctx context.Context, d *demo) error {
	step("3b. a templated batch (producer batch create --template --wait)")
	tmpl := filepath.Join(d.dir, "note.tmpl")
	if err := os.WriteFile(tmpl, []byte("Write a {{.style}} about {{.topic}} for {{.audience | default \"everyone\"}}:\n"), 0o644); err != nil {
		return err
	}
	rows := filepath.Join(d.dir, "rows.csv")
	var b strings.Builder
	b.WriteString("custom_id,topic,style,audience,max_tokens,temperature,seed\n")
	topics := []string{"a rain jacket", "a late parcel", "a city marathon", "autumn", "a bakery opening", "a football match"}
	styles := []string{"product blurb", "short reply", "headline", "haiku"}
	for i, t := range topics {
		for j, s := range styles {
			fmt.Fprintf(&b, "note-%d-%d,%s,%s,%s,24,0.8,%d\n", i+1, j+1, t, s, []string{"", "commuters", "families"}[(i+j)%3], i*10+j)
		}
	}
	if err := os.WriteFile(rows, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("   template %s, %d rows in %s\n", tmpl, len(topics)*len(styles), rows)
	var out strings.Builder
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "producer"), "batch", "create", rows,
		"--model", "builtin:tiny", "--template", tmpl, "--chunk-size", "8", "--trim", "--max-chars", "120",
		"--metadata", "source=demo", "--wait")
	cmd.Env = d.envFor("producer")
	shown := &indentWriter{w: os.Stdout}
	cmd.Stdout = io.MultiWriter(shown, &out)
	cmd.Stderr = shown // the progress bar
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("producer batch create: %w", err)
	}
	// The results live in the artifact store (the NATS object store here,
	// which every process shares); `producer batch results --out` saves
	// them as files.
	var id string
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "batch "); ok && id == "" {
			id, _, _ = strings.Cut(rest, " ")
			id = strings.TrimSuffix(id, ":")
		}
	}
	if id == "" {
		return errors.New("producer batch create --wait printed no batch id")
	}
	out.Reset()
	save := exec.CommandContext(ctx, filepath.Join(d.bin, "producer"), "batch", "results", id, "--out", filepath.Join(d.dir, "results"))
	save.Env = d.envFor("producer")
	save.Stdout, save.Stderr = &out, os.Stderr
	if err := save.Run(); err != nil {
		return fmt.Errorf("producer batch results: %w", err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if path, ok := strings.CutPrefix(line, "output: "); ok {
			return showResults(path)
		}
	}
	return errors.New("producer batch results printed no output path")
}

// indentWriter indents each line it passes on, like the demo's own lines.
type indentWriter struct {
	w       io.Writer
	midLine bool
}

func (iw *indentWriter) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if !iw.midLine {
			b = append(b, "   "...)
			iw.midLine = true
		}
		b = append(b, c)
		if c == '\n' || c == '\r' {
			iw.midLine = false
		}
	}
	if _, err := iw.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}
