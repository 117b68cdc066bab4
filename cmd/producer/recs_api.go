package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// recsAPI serves feedback intake and precomputed recommendations.
type recsAPI struct {
	bus    *pipeline.Bus // nil without NATS: feedback answers 503
	store  *recsys.RedisStore
	intake *loop.Intake // the one validation of feedback events
	gens   *loop.Store  // generation records, for feedback on a generation
	logger *slog.Logger
}

// newRecsAPI connects to NATS when cfg names a server; the recommendation
// lists are read from rdb.
func newRecsAPI(ctx context.Context, cfg pipeline.Config, rdb redis.UniversalClient, logger *slog.Logger) (*recsAPI, error) {
	r := &recsAPI{store: recsys.NewRedisStore(rdb, recsys.RedisStoreOptions{}), intake: loop.NewIntake(rdb),
		gens: loop.NewStore(rdb, loop.StoreOptions{}), logger: logger}
	if cfg.NATSURL == "" {
		logger.Warn("no NATS URL: POST /v1/feedback answers 503 (set TANDEM_NATS_URL)")
		return r, nil
	}
	bus, err := connectBus(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r.bus = bus
	return r, nil
}

// Close closes the NATS connection, if any.
func (r *recsAPI) Close() {
	if r != nil && r.bus != nil {
		r.bus.Close()
	}
}

func connectBus(ctx context.Context, cfg pipeline.Config) (*pipeline.Bus, error) {
	opts, err := cfg.NATSOptions()
	if err != nil {
		return nil, err
	}
	bus, err := pipeline.ConnectBus(ctx, cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	if err := bus.EnsureStreams(ctx); err != nil {
		bus.Close()
		return nil, fmt.Errorf("nats streams: %w", err)
	}
	return bus, nil
}

// recsRoutes adds:
//
//	POST /v1/feedback                         one feedback event (feedback.Event JSON, or feedback on a
//	                                          generation with its fields); 202 once stored
//	GET  /v1/users/{id}/recommendations[?n=]  the user's precomputed list (a token that may not
//	                                          impersonate reads only its own user's: 403)
func (a *apiServer) recsRoutes(mux *http.ServeMux) {
	if a.recs == nil {
		return
	}
	mux.HandleFunc("POST /v1/feedback", a.recs.postFeedback)
	mux.HandleFunc("GET /v1/users/{id}/recommendations", a.recs.getRecommendations)
}

// postFeedback takes one event through the intake (loop.Intake): 400
// names a bad field, 404 an unknown generation, 403 another user's
// generation, 409 an id used before for other content. The event's user
// is the token's own (filled in when absent, 403 for another) unless the
// token may impersonate (bindEventUser). Feedback on a generation goes the way of
// POST /v1/generations/{id}/feedback: built from the record, a rating
// numbered as a revision.
func (r *recsAPI) postFeedback(w http.ResponseWriter, req *http.Request) {
	if r.bus == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "feedback needs NATS: start the producer with TANDEM_NATS_URL (or --nats-url)")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, pipeline.MaxEventBytes))
	if err != nil {
		writeBodyError(w, err)
		return
	}
	body, ok := bindEventUser(w, req, body)
	if !ok {
		return
	}
	if err := checkFeedbackFields(body); err != nil {
		writeParamError(w, http.StatusBadRequest, codeInvalidEvent, carriedParam(err), err.Error())
		return
	}
	ctx := req.Context()
	ev, err := r.intake.Check(ctx, "", body, mayActFor(req))
	if err != nil {
		writeFeedbackError(w, r.logger, err, codeInvalidEvent)
		return
	}
	if ev.OnGeneration() {
		if ev.Revision != 0 {
			writeError(w, http.StatusBadRequest, codeInvalidEvent, `field "revision": revisions are numbered by the server; send the new rating`)
			return
		}
		fb := loop.Feedback{Action: ev.Action, EditedText: ev.EditedText}
		if ev.Action == feedback.ActionRate {
			fb.Value = ev.Value
		}
		sent, err := r.gens.SendFeedback(ctx, ev.GenerationID, fb, r.intake.Checked(publishFeedback(r.bus)))
		if err != nil {
			writeFeedbackError(w, r.logger, err, codeInvalidEvent)
			return
		}
		writeJSON(w, http.StatusAccepted, viewOf(sent))
		return
	}
	if err := r.intake.Claim(ctx, ev); err != nil {
		writeFeedbackError(w, r.logger, err, codeInvalidEvent)
		return
	}
	if ev, err = feedback.Publish(ctx, r.bus, ev); err != nil {
		writeFeedbackError(w, r.logger, err, codeInvalidEvent)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": ev.ID, "subject": pipeline.FeedbackSubject(ev.Type)})
}

// feedbackFields are the fields POST /v1/feedback takes: those of feedback
// on a generation (feedback.Event), which hold a recommender event's
// (recsys.Event). The intake checks their values.
var feedbackFields = bodyFields(reflect.TypeFor[feedback.Event]())

// checkFeedbackFields refuses an event with a field POST /v1/feedback does
// not take: the recommender's decoder ignores unknown fields (events on
// the bus may carry context), but a client's misspelt field would be
// dropped without a word. A body that is not a JSON object is left to the
// intake, which says so.
func checkFeedbackFields(body []byte) error {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if !feedbackFields[k] {
			return &fieldError{k, msgUnknownField}
		}
	}
	return nil
}

// recsView is the answer of the recommendations route and `producer recs`.
type recsView struct {
	User       string          `json:"user"`
	Generation int64           `json:"generation"`
	Found      bool            `json:"found"`
	Items      []recsys.Scored `json:"items"`
}

// getRecs reads a user's list, cut to n (0: all).
func getRecs(ctx context.Context, store *recsys.RedisStore, user string, n int) (recsView, error) {
	v := recsView{User: user, Items: []recsys.Scored{}}
	gen, err := store.Current(ctx)
	if err != nil || gen == 0 {
		return v, err
	}
	v.Generation = gen
	lists, err := store.GetAt(ctx, gen, user)
	if err != nil {
		return v, err
	}
	if lists[0] != nil {
		v.Found, v.Items = true, lists[0]
	}
	if n > 0 && len(v.Items) > n {
		v.Items = v.Items[:n]
	}
	return v, nil
}

// maxRecsUserBytes bounds a user id in a URL (the serving store's limit).
const maxRecsUserBytes = limits.APIRecsUserLen

func (r *recsAPI) getRecommendations(w http.ResponseWriter, req *http.Request) {
	user := req.PathValue("id")
	if user == "" || len(user) > maxRecsUserBytes {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("id: want 1..%d bytes", maxRecsUserBytes))
		return
	}
	if p := principalOf(req); !p.Owns(user) {
		writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("id: token %s reads only user %q's recommendations, not %.64q's (other users' need the impersonate right)", p.Name, p.Name, user))
		return
	}
	n, ok := queryInt(w, req, "n", 0, jobs.MaxRecsTop)
	if !ok {
		return
	}
	v, err := getRecs(req.Context(), r.store, user, n)
	if err != nil {
		writeUnavailable(w, r.logger, err)
		return
	}
	if !v.Found {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no recommendations for user %q (not in the last rebuild, no feedback since)", user))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// cmdFeedback is `producer feedback --user U --item I --event TYPE` (a raw
// recommender event), or `producer feedback --generation ID --action A`
// (feedback on a recorded generation, see sendGenerationFeedback).
func cmdFeedback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("feedback", stderr)
	var ev feedback.Event
	fs.StringVar(&ev.User, "user", "", "user id (required)")
	fs.StringVar(&ev.Item, "item", "", "item id (required)")
	fs.StringVar(&ev.Type, "event", recsys.EventClick, "event type: view, click, purchase, rating, dwell, accepted, edited, rejected, regenerated")
	fs.Float64Var(&ev.Value, "value", 1, "value: a rating, seconds of dwell, a count")
	fs.StringVar(&ev.ID, "id", "", "event id, used as Nats-Msg-Id (default: random)")
	fs.StringVar(&ev.ItemKind, "kind", "", "item kind, e.g. template or topic")
	gf := bindGenerationFeedbackFlags(fs)
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if *gf.generation != "" {
		v, err := sendGenerationFeedback(ctx, fs, *cfg, gf, ev.Value)
		if err != nil {
			return err
		}
		return printJSON(stdout, v)
	}
	if *gf.action != "" || *gf.text != "" {
		return errors.New("--action and --text need --generation")
	}
	if cfg.NATSURL == "" {
		return errors.New("feedback needs NATS: set TANDEM_NATS_URL (or --nats-url)")
	}
	if err := ev.Check(""); err != nil {
		return err // before dialling: a bad flag needs no server
	}
	bus, err := connectBus(ctx, *cfg)
	if err != nil {
		return err
	}
	defer bus.Close()
	pub, err := feedback.Publish(ctx, bus, ev)
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]string{"id": pub.ID, "subject": pipeline.FeedbackSubject(pub.Type)})
}

// cmdRecs is `producer recs USER [--n N]`.
func cmdRecs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("recs", stderr)
	n := fs.Int("n", 10, "at most this many items")
	user, err := pipeline.ParseArgs(fs, args, "USER")
	if err != nil {
		return err
	}
	if *n < 1 || *n > jobs.MaxRecsTop {
		return fmt.Errorf("--n: %d out of range [1, %d]", *n, jobs.MaxRecsTop)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	rdb, err := cfg.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	v, err := getRecs(ctx, recsys.NewRedisStore(rdb, recsys.RedisStoreOptions{}), user[0], *n)
	if err != nil {
		return err
	}
	return printJSON(stdout, v)
}
