package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/internal/apierror"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("serve", stderr)
	addr := fs.String("addr", envOr("TANDEM_HTTP_ADDR", "127.0.0.1:8080"), "listen address of the HTTP API [TANDEM_HTTP_ADDR]")
	apiTokens := fs.String("api-tokens", envOr("TANDEM_API_TOKENS", ""), "file of API tokens, one per line: <token or sha256 hex> <name (the user it acts as)> <submit,read,impersonate,admin>; empty: no authentication (logged as a warning) [TANDEM_API_TOKENS]")
	requireAuth := fs.Bool("api-require-auth", envOr("TANDEM_API_REQUIRE_AUTH", "") == "true", "refuse to start without --api-tokens [TANDEM_API_REQUIRE_AUTH]")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	slog.SetDefault(logger) // writeUnavailable's log where a handler has no logger of its own
	authn, err := auth.New(auth.Options{TokenFile: *apiTokens, RequireTokens: *requireAuth, Logger: logger})
	if err != nil {
		return err
	}
	if st := authn.Store(); st != nil {
		st.WatchSIGHUP(ctx, logger) // kill -HUP reloads the token file
	}
	client, err := newClient(*cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	redisOpt, err := cfg.RedisConnOpt()
	if err != nil {
		return err
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promReg.MustRegister(pipeline.QueueCollector(client.Inspector()))

	batches, err := newBatchAPI(ctx, *cfg, logger)
	if err != nil {
		return err
	}
	defer batches.Close()
	recs, err := newRecsAPI(ctx, *cfg, client.Redis(), logger)
	if err != nil {
		return err
	}
	defer recs.Close()
	completions, err := newCompletionsAPI(ctx, *cfg, client, logger)
	if err != nil {
		return err
	}
	defer completions.Close()
	mon, closeMon := authn.AsynqmonUI(monitoringOptions(redisOpt))
	defer closeMon()

	// Loss curves are read from run directories in the data root, which
	// the producer shares with the workers (k8s: the shared volume); job
	// paths are checked against it before they are enqueued. A root inside
	// the service's own state is a configuration no one should run.
	root, err := jobs.OpenDataRoot(*cfg)
	switch {
	case errors.Is(err, dataroot.ErrRootInReserved):
		return err
	case err != nil:
		logger.Warn("no data root: GET /v1/finetunes/{id}/loss.png answers 404, and job paths are checked by the workers only", "err", err)
	default:
		defer root.Close()
	}
	api := &apiServer{client: client, logger: logger, batches: batches, recs: recs, completions: completions, root: root, queues: jobQueues(cfg.Queues)}
	mux := serveMux(api, authn, mon, promReg, cfg.DataDir, root)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := newHTTPServer(mux, defaultReadPace)
	logger.Info("producer API listening", "addr", ln.Addr().String(), "monitoring", "http://"+ln.Addr().String()+"/monitoring/")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutCtx)
}

// serveMux builds every route of `producer serve`. Each /v1 route sits
// behind the token check (GET needs read, other methods submit), answers
// with an x-request-id, and a path or method no route has gets the API's
// JSON 404 or 405 (v1Routes); completions check their model against the
// same catalog GET /v1/models lists; the
// monitoring UI mon, which authn guards already, is read-only unless the
// token has admin; /metrics and /healthz are open. cmdServe serves it, and
// the tests check the guard of each route through it.
func serveMux(api *apiServer, authn *auth.Authenticator, mon http.Handler, promReg *prometheus.Registry, dataDir string, root *dataroot.Root) *http.ServeMux {
	apiMux := http.NewServeMux()
	api.routes(apiMux)
	registerFinetuneRoutes(apiMux, api.client, dataDir, root)
	models := &modelCatalog{reg: registry.New(api.client.Redis(), jobs.RegistryDir(dataDir)), root: root}
	models.routes(apiMux)
	if api.completions != nil {
		api.completions.models = models
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", withRequestID(authn.Protect(auth.ByMethod, v1Routes(apiMux))))
	mux.Handle("/monitoring/", mon)
	mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	registerLoopRoutes(mux, apiMux, authn, promReg, api.client.Redis(), api.recs, api.logger)
	return mux
}

// apiServer serves the versioned JSON API.
type apiServer struct {
	client  *pipeline.Client
	logger  *slog.Logger
	batches *batchAPI // nil: no /v1/batches routes
	recs    *recsAPI  // nil: no feedback or recommendation routes
	// completions is nil: no /v1/completions or /v1/sessions routes.
	completions *completionsAPI
	// root is the data root POST /v1/jobs checks job paths against, as
	// the workers will; nil: the workers' check alone.
	root *dataroot.Root
	// queues are the queues POST /v1/jobs accepts (jobQueues); nil: the
	// default configuration's.
	queues []string
}

// maxRequestBody bounds a JSON request body of the API.
const maxRequestBody = limits.APIJobBodyBytes

func (a *apiServer) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/jobs", a.createJob)
	mux.HandleFunc("GET /v1/jobs/{id}", a.getJob)
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", a.cancelJob)
	mux.HandleFunc("GET /v1/queues", a.listQueues)
	a.batchRoutes(mux)
	a.recsRoutes(mux)
	a.completionsRoutes(mux)
	a.embeddingsRoutes(mux)
	mux.HandleFunc("GET /v1/kinds", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"kinds": jobs.PublicNames()})
	})
}

// createJobRequest is the body of POST /v1/jobs. Every field is checked
// (createJob) before anything is enqueued.
type createJobRequest struct {
	Kind     string          `json:"kind"`                // a public kind (jobs.CheckPublic)
	Args     json.RawMessage `json:"args"`                // a JSON object: the kind's args
	Queue    string          `json:"queue,omitempty"`     // one of the known queues; default the kind's own
	Device   string          `json:"device,omitempty"`    // "cuda": the gpu queue (GPU workers)
	TaskID   string          `json:"task_id,omitempty"`   // 1..limits.APITaskIDLen of A-Z a-z 0-9 _ -
	MaxRetry *int64          `json:"max_retry,omitempty"` // 0..limits.JobMaxRetry; default the kind's own
}

// jobQueues are the queues a client may name in POST /v1/jobs: those of
// the configuration (TANDEM_QUEUES, the workers' set) and the GPU
// workers' queue, which device "cuda" picks. A job on any other queue
// would wait forever, since no worker takes it.
func jobQueues(configured map[string]int) []string {
	set := map[string]bool{pipeline.QueueGPU: true}
	for q := range configured {
		set[q] = true
	}
	out := make([]string, 0, len(set))
	for q := range set {
		out = append(out, q)
	}
	sort.Strings(out)
	return out
}

// checkJobArgs checks req's kind and args, but not the args' paths
// (jobs.CheckPaths, which needs the data root); errors name the field.
func checkJobArgs(req *createJobRequest) error {
	if args := bytes.TrimSpace(req.Args); len(args) == 0 || args[0] != '{' {
		return errors.New("args: required, a JSON object")
	}
	if err := jobs.ValidatePayload(req.Kind, req.Args); err != nil {
		return argsError(req.Kind, err)
	}
	return nil
}

// argsError names the field of kind's args that err, jobs.ValidatePayload's,
// refuses as args.<field> ("args" for the args as a whole).
func argsError(kind string, err error) error {
	if fe := jsonFieldError("args", err); fe != nil {
		fe.msg += " (" + kind + " args)"
		return fe
	}
	msg := err.Error()
	for _, p := range []string{"decode " + kind + " args: ", "invalid " + kind + " args: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	field := leadingPath(msg)
	if field != "" {
		msg = strings.TrimSpace(strings.TrimPrefix(msg[len(field):], ":"))
	}
	return &fieldError{joinPath("args", field), msg + " (" + kind + " args)"}
}

// checkJobOptions checks req's queue, device, task_id and max_retry, and
// returns the queue to enqueue on ("" for the kind's own); errors name
// the field.
func (a *apiServer) checkJobOptions(req *createJobRequest) (string, error) {
	known := a.queues
	if known == nil {
		known = jobQueues(pipeline.DefaultConfig().Queues)
	}
	if req.Queue != "" && !slices.Contains(known, req.Queue) {
		return "", fmt.Errorf("queue: %.64q is not a queue the workers take (known: %s)", req.Queue, strings.Join(known, ", "))
	}
	if len(req.Device) > pipeline.MaxQueueNameLen {
		return "", fmt.Errorf("device: %d bytes, over the limit of %d; want cpu, cuda or cuda:N", len(req.Device), pipeline.MaxQueueNameLen)
	}
	queue, err := pipeline.QueueForDevice(req.Device, req.Queue)
	if err != nil {
		return "", fmt.Errorf("device: %w", err)
	}
	if req.TaskID != "" {
		if err := checkTaskID(req.TaskID); err != nil {
			return "", err
		}
	}
	if m := req.MaxRetry; m != nil && (*m < 0 || *m > limits.JobMaxRetry) {
		return "", fmt.Errorf("max_retry: %d is outside 0..%d", *m, limits.JobMaxRetry)
	}
	return queue, nil
}

// checkTaskID refuses a client's task id that is too long or holds other
// characters than A-Z a-z 0-9 _ -: the ids the pipeline derives for its
// own tasks (batch chunks, the nightly rebuild, webhooks) all hold ':', so
// a client can never take one first.
func checkTaskID(id string) error {
	if len(id) > limits.APITaskIDLen {
		return fmt.Errorf("task_id: %d bytes, over the limit of %d", len(id), limits.APITaskIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("task_id: byte %d is %q; use A-Z a-z 0-9 _ - only", i, c)
		}
	}
	return nil
}

func (a *apiServer) createJob(w http.ResponseWriter, r *http.Request) {
	var req createJobRequest
	if !decodeStrict(w, r, maxRequestBody, &req) {
		return
	}
	if err := jobs.CheckPublic(req.Kind); err != nil {
		writeParamError(w, http.StatusBadRequest, "invalid_request", paramOf(err, req), err.Error())
		return
	}
	if err := checkJobArgs(&req); err != nil {
		writeParamError(w, http.StatusBadRequest, "invalid_args", paramOf(err, req), err.Error())
		return
	}
	if !allowServingChange(w, r, jobs.ServingChange(req.Kind, req.Args)) {
		return
	}
	queue, err := a.checkJobOptions(&req)
	if err != nil {
		writeParamError(w, http.StatusBadRequest, "invalid_request", paramOf(err, req), err.Error())
		return
	}
	if a.root != nil {
		if err := jobs.CheckPaths(a.root, req.Kind, req.Args); err != nil {
			writeParamError(w, http.StatusBadRequest, "invalid_args", joinPath("args", paramOf(err, nil)), fmt.Sprintf("%s args: %v", req.Kind, err))
			return
		}
	}
	maxRetry := -1
	if req.MaxRetry != nil {
		maxRetry = int(*req.MaxRetry)
	}
	info, err := enqueueRaw(r.Context(), a.client, req.Kind, req.Args, queue, req.TaskID, maxRetry)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		writeError(w, http.StatusConflict, "conflict", "a job with task_id "+req.TaskID+" already exists")
		return
	case err != nil:
		writeUnavailable(w, a.logger.With("op", "enqueue", "kind", req.Kind), err)
		return
	}
	writeJSON(w, http.StatusAccepted, taskView(info))
}

// monitoringOptions configures the asynqmon UI at /monitoring/. Payloads
// are shown as GET /v1/jobs shows them (jobs.PublicPayload): without an
// interactive task's stream key, which only the producer and the worker
// running it may hold.
func monitoringOptions(redisOpt asynq.RedisConnOpt) asynqmon.Options {
	return asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: redisOpt,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(func(kind string, payload []byte) string {
			return asynqmon.DefaultPayloadFormatter.FormatPayload(kind, jobs.PublicPayload(kind, payload))
		})}
}

// allowServingChange answers 403 and returns false when change (what a
// request would change for every user, "" for nothing) needs the admin
// right the request's token lacks.
func allowServingChange(w http.ResponseWriter, r *http.Request, change string) bool {
	if change == "" {
		return true
	}
	if p, ok := auth.PrincipalFrom(r.Context()); ok && p.Rights.Has(auth.RightAdmin) {
		return true
	}
	writeError(w, http.StatusForbidden, "forbidden", change+"; that takes a token with the admin right")
	return false
}

// afterValueError is the error for a body that goes on after its JSON
// value: exactly one value is taken, so `{...} garbage` or two objects are
// refused rather than half read. A body over its limit or too slow keeps
// its error (413, 408).
func afterValueError(err error) error {
	if isBodyError(err) { // over the limit (413), or too slow (408)
		return err
	}
	return errors.New("body: data after the JSON value; send exactly one JSON object")
}

func (a *apiServer) getJob(w http.ResponseWriter, r *http.Request) {
	info, err := findTask(a.client.Inspector(), r.PathValue("id"))
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if err != nil {
		writeUnavailable(w, a.logger, err)
		return
	}
	writeJSON(w, http.StatusOK, taskView(info))
}

func (a *apiServer) cancelJob(w http.ResponseWriter, r *http.Request) {
	res, err := cancelTask(a.client.Inspector(), r.PathValue("id"))
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusConflict, "conflict", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id"), "result": res})
}

func (a *apiServer) listQueues(w http.ResponseWriter, _ *http.Request) {
	qs, err := queueViews(a.client.Inspector())
	if err != nil {
		writeUnavailable(w, a.logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"queues": qs})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// apiError is the error body of every non-2xx answer, in OpenAI's shape
// (package apierror).
type apiError = apierror.Body

// writeBodyError answers a request whose body did not decode, the same way
// on every route: 413 naming the limit when it was over its
// http.MaxBytesReader bound, 408 when it arrived too slowly (pacedBody),
// else 400.
func writeBodyError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	var slow *errBodyTooSlow
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body: over the limit of %d bytes", mbe.Limit))
	case errors.As(err, &slow):
		writeError(w, http.StatusRequestTimeout, "too_slow", slow.Error())
	default:
		err = decodeError(err)
		writeParamError(w, http.StatusBadRequest, bodyErrorCode(err), carriedParam(err), err.Error())
	}
}

// msgUnavailable is the message of every 503 that a failed dependency
// caused: its error names servers, addresses and paths, which are the
// operator's business, so it goes to the log and the client gets this.
const msgUnavailable = "a service the API needs (Redis, NATS or the artifact store) did not answer; try again later"

// writeUnavailable logs err (on logger, or slog's default when nil) and
// answers 503 with msgUnavailable.
func writeUnavailable(w http.ResponseWriter, logger *slog.Logger, err error) {
	if logger == nil {
		logger = slog.Default()
	}
	logger.Error("answered 503 unavailable", "err", err)
	writeError(w, http.StatusServiceUnavailable, "unavailable", msgUnavailable)
}

// writeError answers status with the API's error body: OpenAI's shape,
// its type following the status (apierror.Type), code Tandem's, param null
// (writeParamError names one).
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeParamError(w, status, code, "", msg)
}

func envOr(key, def string) string {
	if v, ok := lookupEnv(key); ok {
		return v
	}
	return def
}
