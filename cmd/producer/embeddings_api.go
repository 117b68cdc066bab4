package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/tokenstream"
)

// maxEmbeddingsBody bounds a POST /v1/embeddings body.
const maxEmbeddingsBody = limits.APIEmbeddingsBodyBytes

// embeddingsRetention keeps a finished embeddings task, and so its result,
// long enough for the producer that waits for it to read it (it then
// deletes the task); a producer that stopped waiting leaves it to expire.
const embeddingsRetention = time.Minute

// How often an embeddings request looks at its task: at first soon (a
// short input takes milliseconds), then less often, up to the longest.
const (
	embeddingsPollFirst = 2 * time.Millisecond
	embeddingsPollMax   = 50 * time.Millisecond
)

// embeddingsRoutes adds
//
//	POST /v1/embeddings   OpenAI's embeddings: one vector per input, float or base64
//
// beside the completions, on the same interactive queue.
func (a *apiServer) embeddingsRoutes(mux *http.ServeMux) {
	if a.completions == nil {
		return
	}
	mux.HandleFunc("POST /v1/embeddings", a.completions.embeddings)
}

// embeddings serves POST /v1/embeddings. The body is checked here; a worker
// embeds the inputs (jobs.EmbeddingsArgs on the interactive queue, task id
// "embd-…") and keeps the response as the task's result, which this handler
// waits for by reading the task's state in Redis, soon and then every
// embeddingsPollMax: asynq's own record of the job, no new transport, and
// room for megabytes of vectors that a NATS message could not carry. A
// task no worker takes within the start timeout is deleted and answered
// 503, as a completion is; a client that goes away deletes its queued task
// or cancels its running one.
func (c *completionsAPI) embeddings(w http.ResponseWriter, r *http.Request) {
	var body generation.EmbeddingsBody
	if !decodeStrict(w, r, maxEmbeddingsBody, &body) {
		return
	}
	user, ok := actAs(w, r, "user", body.User)
	if !ok {
		return
	}
	body.User = user
	args := jobs.EmbeddingsArgs{ID: jobs.NewEmbeddingsID(), Body: body}
	if err := args.Validate(); err != nil {
		writeRequestError(w, http.StatusBadRequest, err)
		return
	}
	if b, _ := json.Marshal(args); len(b) > pipeline.MaxPayloadBytes {
		writeParamError(w, http.StatusRequestEntityTooLarge, "too_large", "input",
			fmt.Sprintf("input: %d bytes once encoded for a worker, over the limit of %d; send fewer or shorter inputs per request", len(b), pipeline.MaxPayloadBytes))
		return
	}
	// An unknown model and a lane no worker serves are answered at once, as
	// completions are.
	if !c.models.requireModel(w, r, body.Model) || !c.requireInteractiveWorker(w) {
		return
	}
	deadline := time.Now().Add(c.startTimeout + jobs.EmbeddingsTimeout)
	if _, err := pipeline.Enqueue(r.Context(), c.client, args, asynq.TaskID(args.ID), asynq.Deadline(deadline), asynq.Retention(embeddingsRetention)); err != nil {
		writeUnavailable(w, c.logger.With("op", "embeddings enqueue", "id", args.ID), err)
		return
	}
	res, err := c.awaitEmbeddings(r.Context(), args.ID, deadline)
	switch {
	case r.Context().Err() != nil:
		return
	case errors.Is(err, errNoEmbeddingsWorker):
		c.logger.Warn("embeddings: no worker took the request", "id", args.ID)
		writeError(w, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("no worker took the request within %v (is one serving the %q queue?)", c.startTimeout, pipeline.QueueInteractive))
		return
	case err != nil:
		c.logger.Error("embeddings: no answer from the worker", "id", args.ID, "err", err)
		writeError(w, http.StatusBadGateway, tokenstream.CodeFailed, "the worker could not complete the embeddings; try again later")
		return
	case res.Error != nil:
		writeRequestError(w, embeddingsErrorStatus(res.Error.Code), res.Error)
		return
	}
	res.Body.SetEncoding(body.EncodingFormat)
	writeJSON(w, http.StatusOK, res.Body)
}

// errNoEmbeddingsWorker means no worker took an embeddings task in time.
var errNoEmbeddingsWorker = errors.New("no worker took the embeddings task")

// awaitEmbeddings waits for embeddings task id to finish and returns its
// result, deleting the task. A task still queued after the start timeout
// is deleted (errNoEmbeddingsWorker); one that has not finished some time
// after its deadline is given up on. When ctx ends, a queued task is
// deleted and a running one cancelled.
func (c *completionsAPI) awaitEmbeddings(ctx context.Context, id string, deadline time.Time) (jobs.EmbeddingsResult, error) {
	var res jobs.EmbeddingsResult
	insp := c.client.Inspector()
	queue := pipeline.QueueInteractive
	startBy := time.Now().Add(c.startTimeout)
	wait := embeddingsPollFirst
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.dropEmbeddings(id)
			return res, ctx.Err()
		case <-t.C:
		}
		info, err := pipeline.TaskInfo(ctx, c.client.Redis(), insp, queue, id)
		switch {
		case err != nil && ctx.Err() == nil:
			return res, fmt.Errorf("read the task: %w", err)
		case err != nil:
			continue // ctx ended: answered above
		case info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived:
			if err := insp.DeleteTask(queue, id); err != nil {
				c.logger.Warn("embeddings: finished task not deleted; it expires", "id", id, "err", err)
			}
			if err := json.Unmarshal(info.Result, &res); err != nil || (res.Body == nil && res.Error == nil) {
				return res, fmt.Errorf("task ended %s without a result (last error: %s)", info.State, info.LastErr)
			}
			return res, nil
		case info.State == asynq.TaskStatePending && time.Now().After(startBy):
			if insp.DeleteTask(queue, id) == nil {
				return res, errNoEmbeddingsWorker
			}
			// Taken just now: wait for it as for any running task.
		case time.Now().After(deadline.Add(time.Minute)):
			c.dropEmbeddings(id)
			return res, fmt.Errorf("task still %s a minute after its deadline", info.State)
		}
		wait = min(2*wait, embeddingsPollMax)
		t.Reset(wait)
	}
}

// dropEmbeddings deletes embeddings task id if it is still queued, and
// otherwise asks the worker running it to stop.
func (c *completionsAPI) dropEmbeddings(id string) {
	insp := c.client.Inspector()
	if insp.DeleteTask(pipeline.QueueInteractive, id) == nil {
		return
	}
	if err := insp.CancelProcessing(id); err != nil {
		c.logger.Warn("embeddings: cancel not sent", "id", id, "err", err)
	}
}

// embeddingsErrorStatus is the status of a failed embeddings request, by
// its error code.
func embeddingsErrorStatus(code string) int {
	if code == generation.CodeInvalidRequest {
		return http.StatusBadRequest
	}
	return genErrorStatus(code)
}

// writeRequestError answers err with status: a *generation.RequestError
// with its code and the field it names, anything else as an invalid
// request.
func writeRequestError(w http.ResponseWriter, status int, err error) {
	var re *generation.RequestError
	if errors.As(err, &re) {
		writeParamError(w, status, re.Code, re.Param, re.Error())
		return
	}
	writeError(w, status, generation.CodeInvalidRequest, err.Error())
}
