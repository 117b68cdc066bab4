package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("serve", stderr)
	addr := fs.String("addr", envOr("TANDEM_HTTP_ADDR", "127.0.0.1:8080"), "listen address of the HTTP API [TANDEM_HTTP_ADDR]")
	apiTokens := fs.String("api-tokens", envOr("TANDEM_API_TOKENS", ""), "file of API tokens, one per line: <token or sha256 hex> <name (the user it acts as)> <submit,read,impersonate,admin>; empty: no authentication (logged as a warning) [TANDEM_API_TOKENS]")
	requireAuth := fs.Bool("api-require-auth", envOr("TANDEM_API_REQUIRE_AUTH", "") == "true", "refuse to start without --api-tokens [TANDEM_API_REQUIRE_AUTH]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
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
	api := &apiServer{client: client, logger: logger, batches: batches, recs: recs, completions: completions}
	mon, closeMon := authn.AsynqmonUI(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: redisOpt})
	defer closeMon()

	// Loss curves are read from run directories in the data root, which
	// the producer shares with the workers (k8s: the shared volume).
	root, err := jobs.OpenDataRoot(*cfg)
	if err != nil {
		logger.Warn("no data root: GET /v1/finetunes/{id}/loss.png answers 404", "err", err)
	} else {
		defer root.Close()
	}
	mux := serveMux(api, authn, mon, promReg, cfg.DataDir, root)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
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
// behind the token check (GET needs read, other methods submit); the
// monitoring UI mon, which authn guards already, is read-only unless the
// token has admin; /metrics and /healthz are open. cmdServe serves it, and
// the tests check the guard of each route through it.
func serveMux(api *apiServer, authn *auth.Authenticator, mon http.Handler, promReg *prometheus.Registry, dataDir string, root *dataroot.Root) *http.ServeMux {
	apiMux := http.NewServeMux()
	api.routes(apiMux)
	registerFinetuneRoutes(apiMux, api.client, dataDir, root)
	mux := http.NewServeMux()
	mux.Handle("/v1/", authn.Protect(auth.ByMethod, apiMux))
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
	mux.HandleFunc("GET /v1/kinds", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"kinds": jobs.Names()})
	})
}

// createJobRequest is the body of POST /v1/jobs.
type createJobRequest struct {
	Kind     string          `json:"kind"`
	Args     json.RawMessage `json:"args"`
	Queue    string          `json:"queue,omitempty"`
	Device   string          `json:"device,omitempty"` // "cuda": the gpu queue (GPU workers)
	TaskID   string          `json:"task_id,omitempty"`
	MaxRetry *int            `json:"max_retry,omitempty"`
}

func (a *apiServer) createJob(w http.ResponseWriter, r *http.Request) {
	var req createJobRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeBodyError(w, err)
		return
	}
	if req.Kind == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", "kind: required")
		return
	}
	if err := jobs.ValidatePayload(req.Kind, req.Args); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_args", fmt.Sprintf("%s args: %v", req.Kind, err))
		return
	}
	queue, err := pipeline.QueueForDevice(req.Device, req.Queue)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	maxRetry := -1
	if req.MaxRetry != nil {
		maxRetry = *req.MaxRetry
	}
	info, err := enqueueRaw(r.Context(), a.client, req.Kind, req.Args, queue, req.TaskID, maxRetry)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		writeError(w, http.StatusConflict, "conflict", "a job with task_id "+req.TaskID+" already exists")
		return
	case err != nil:
		a.logger.Error("enqueue failed", "kind", req.Kind, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, taskView(info))
}

func (a *apiServer) getJob(w http.ResponseWriter, r *http.Request) {
	info, err := findTask(a.client.Inspector(), r.PathValue("id"))
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
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
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
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

// apiError is the error body of every non-2xx answer.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeBodyError answers a request whose body did not decode: 413 naming
// the limit when it was over its http.MaxBytesReader bound, else 400.
func writeBodyError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body: over the limit of %d bytes", mbe.Limit))
		return
	}
	writeError(w, http.StatusBadRequest, "invalid_json", err.Error())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}

func envOr(key, def string) string {
	if v, ok := lookupEnv(key); ok {
		return v
	}
	return def
}
