package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
)

// loopAPI serves feedback on generations, the loop metrics and the loop
// dashboard. Generation records and metrics are read from Redis, so every
// producer replica answers the same; the metrics are written by the
// scheduler's loop-metrics consumer.
type loopAPI struct {
	store   *loop.Store
	intake  *loop.Intake
	metrics *loop.Metrics
	bus     *pipeline.Bus // nil without NATS: feedback answers 503
	logger  *slog.Logger
}

// maxFeedbackBody bounds POST /v1/generations/{id}/feedback.
const maxFeedbackBody = feedback.MaxTextBytes + 4096

// registerLoopRoutes adds the loop's routes. On api, behind the API's
// token check (GET needs read, POST submit):
//
//	POST /v1/generations/{id}/feedback   {"action","value","edited_text","user"}; 202 once published (a
//	                                     re-rating: its revision; the same rating again: nothing);
//	                                     "user" is the token's own (filled in when absent) and must be the
//	                                     generation's (403), unless the token may impersonate
//	GET  /v1/generations/{id}            the generation record and its feedback; a token that may not
//	                                     impersonate reads only its own user's (403)
//	GET  /v1/loop/metrics[?hours=N]      acceptance, rating, edit distance: totals and hourly
//
// On root, GET /dashboard: the HTML page, behind the same guard as the
// monitoring UI (the read right; browsers are asked for the token as a
// Basic password) and, since it lists every user's generations, the
// impersonate right too. It registers the loop's Prometheus collector on
// promReg. The bus is recs's (nil without NATS).
func registerLoopRoutes(root, api *http.ServeMux, authn *auth.Authenticator, promReg prometheus.Registerer, rdb redis.UniversalClient, recs *recsAPI, logger *slog.Logger) {
	l := &loopAPI{store: loop.NewStore(rdb, loop.StoreOptions{}), intake: loop.NewIntake(rdb), metrics: loop.NewMetrics(rdb, loop.MetricsOptions{}), logger: logger}
	if recs != nil {
		l.bus = recs.bus
	}
	api.HandleFunc("POST /v1/generations/{id}/feedback", l.postFeedback)
	api.HandleFunc("GET /v1/generations/{id}", l.getGeneration)
	api.HandleFunc("GET /v1/loop/metrics", l.getMetrics)
	dash := everyUsers(&loop.Dashboard{Store: l.store, Metrics: l.metrics, Logger: logger})
	root.Handle("GET /dashboard", authn.Monitoring(dash, dash))
	if promReg != nil {
		promReg.MustRegister(loop.NewCollector(l.metrics))
	}
}

// publishFeedback publishes a feedback event over bus
// (feedback.Publish); a loop.Publisher.
func publishFeedback(bus *pipeline.Bus) loop.Publisher {
	return func(ctx context.Context, ev feedback.Event) error {
		_, err := feedback.Publish(ctx, bus, ev)
		return err
	}
}

// feedbackView is the answer of the feedback route and of
// `producer feedback --generation`.
type feedbackView struct {
	ID           string `json:"id"`
	GenerationID string `json:"generation_id"`
	Action       string `json:"action"`
	Event        string `json:"event"`
	Item         string `json:"item,omitempty"`
	Subject      string `json:"subject"`
	// Value is the rating; Revision (k >= 1) and Previous say that it
	// re-rates the generation, replacing Previous.
	Value    float64 `json:"value,omitempty"`
	Revision int     `json:"revision,omitempty"`
	Previous float64 `json:"previous,omitempty"`
	// Unchanged: the generation already had this rating and nothing was
	// published; ID is the event that counts.
	Unchanged bool `json:"unchanged,omitempty"`
}

func viewOf(sent loop.FeedbackSent) feedbackView {
	ev := sent.Event
	v := feedbackView{ID: ev.ID, GenerationID: ev.GenerationID, Action: ev.Action, Event: ev.Type, Item: ev.Item,
		Subject: pipeline.FeedbackSubject(ev.Type), Unchanged: sent.Unchanged}
	if ev.Action == feedback.ActionRate {
		v.Value = ev.Value
		if !sent.Unchanged {
			v.Revision, v.Previous = ev.Revision, ev.Previous
		}
	}
	return v
}

// codeNoUser is the error code of feedback refused because its generation
// has no user (loop.ErrNoUser).
const codeNoUser = "no_user"

// Error codes of a bad field in feedback: POST /v1/generations/{id}/feedback
// answers the first, POST /v1/feedback the second.
const (
	codeInvalidFeedback = "invalid_feedback"
	codeInvalidEvent    = "invalid_event"
)

// writeFeedbackError answers feedback the intake or the publisher refused:
// 400 (code400) naming a bad field, 404 for an unknown generation, 403 for
// another user's, 409 for an event id used before for other content, 503
// for anything else (NATS or Redis down).
func writeFeedbackError(w http.ResponseWriter, logger *slog.Logger, err error, code400 string) {
	switch {
	case errors.Is(err, loop.ErrNoUser):
		writeError(w, http.StatusBadRequest, codeNoUser, err.Error())
	case errors.Is(err, feedback.ErrInvalid):
		writeParamError(w, http.StatusBadRequest, code400, paramOf(err, feedback.Event{}), err.Error())
	case errors.Is(err, loop.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, loop.ErrWrongUser):
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, loop.ErrReusedID):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	default:
		writeUnavailable(w, logger, err)
	}
}

func (l *loopAPI) postFeedback(w http.ResponseWriter, r *http.Request) {
	if l.bus == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "feedback needs NATS: start the producer with TANDEM_NATS_URL (or --nats-url)")
		return
	}
	var fb loop.Feedback
	if !decodeStrict(w, r, maxFeedbackBody, &fb) {
		return
	}
	user, ok := actAs(w, r, "user", fb.User)
	if !ok {
		return
	}
	fb.User, fb.ForAnyUser = user, mayActFor(r)
	sent, err := l.store.SendFeedback(r.Context(), r.PathValue("id"), fb, l.intake.Checked(publishFeedback(l.bus)))
	if err != nil {
		writeFeedbackError(w, l.logger, err, codeInvalidFeedback)
		return
	}
	writeJSON(w, http.StatusAccepted, viewOf(sent))
}

func (l *loopAPI) getGeneration(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := pipeline.ValidateID(id); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "id: "+err.Error())
		return
	}
	g, err := l.store.Get(r.Context(), id)
	if errors.Is(err, loop.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if p := principalOf(r); err == nil && !p.Owns(g.User) {
		writeError(w, http.StatusForbidden, "forbidden", otherUsers(p, "generation "+id, "generations").Error())
		return
	}
	var fbs []loop.GenerationFeedback
	if err == nil {
		fbs, err = l.metrics.FeedbackOf(r.Context(), []string{id})
	}
	if err != nil {
		writeUnavailable(w, l.logger, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		loop.Generation
		Feedback loop.GenerationFeedback `json:"feedback"`
	}{g, fbs[0]})
}

func (l *loopAPI) getMetrics(w http.ResponseWriter, r *http.Request) {
	hours, ok := queryInt(w, r, "hours", loop.DefaultDashboardHours, loop.MaxMetricsHours)
	if !ok {
		return
	}
	v, err := l.metrics.Read(r.Context(), time.Now(), hours)
	if err != nil {
		writeUnavailable(w, l.logger, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// generationFeedbackFlags are `producer feedback`'s flags for feedback on
// a generation.
type generationFeedbackFlags struct {
	generation, action, text *string
}

func bindGenerationFeedbackFlags(fs *flag.FlagSet) generationFeedbackFlags {
	return generationFeedbackFlags{
		generation: fs.String("generation", "", "feedback on this generation id (with --action; the user, item and model come from its record)"),
		action:     fs.String("action", "", "with --generation: accept, reject, rate (--value 1..5), edit (--text), regenerate"),
		text:       fs.String("text", "", "with --action edit: the edited text"),
	}
}

// sendGenerationFeedback is `producer feedback --generation ID --action A`:
// --value is the rating (rate only), --text the edited text (edit only);
// the recommender-event flags do not apply.
func sendGenerationFeedback(ctx context.Context, fs *flag.FlagSet, cfg pipeline.Config, gf generationFeedbackFlags, value float64) (feedbackView, error) {
	fb := loop.Feedback{Action: *gf.action, EditedText: *gf.text}
	var conflict error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "value":
			fb.Value = value
		case "user", "item", "event", "id", "kind":
			conflict = fmt.Errorf("--%s: not with --generation (the generation's record names the user and item)", f.Name)
		}
	})
	if conflict != nil {
		return feedbackView{}, conflict
	}
	if err := fb.Validate(); err != nil {
		return feedbackView{}, err // before dialling: a bad flag needs no server
	}
	if cfg.NATSURL == "" {
		return feedbackView{}, errors.New("feedback needs NATS: set TANDEM_NATS_URL (or --nats-url)")
	}
	if err := cfg.Validate(); err != nil {
		return feedbackView{}, err
	}
	rdb, err := cfg.RedisClient()
	if err != nil {
		return feedbackView{}, err
	}
	defer rdb.Close()
	bus, err := connectBus(ctx, cfg)
	if err != nil {
		return feedbackView{}, err
	}
	defer bus.Close()
	sent, err := loop.NewStore(rdb, loop.StoreOptions{}).SendFeedback(ctx, *gf.generation, fb, loop.NewIntake(rdb).Checked(publishFeedback(bus)))
	if err != nil {
		return feedbackView{}, err
	}
	return viewOf(sent), nil
}

// queryInt reads the integer query parameter name, in [1, hi], or def when
// absent; a bad value is answered with 400 naming it, and ok is false.
func queryInt(w http.ResponseWriter, r *http.Request, name string, def, hi int) (v int, ok bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > hi {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s: want an integer in [1, %d]", name, hi))
		return 0, false
	}
	return n, true
}
