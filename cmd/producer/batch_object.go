package main

import (
	"context"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/batch"
)

// batchObject is a batch as the HTTP API shows it: OpenAI's batch object
// (its result files as file ids, completion_window as "24h", errors as a
// list object), plus Tandem's extensions from batch.Batch (model,
// input_kind, chunks, chunks_done, chunk_size, batch_size, skipped_invalid,
// postprocess, device). The fields declared here shadow batch.Batch's of
// the same JSON name; the result files' keys and locations are server
// state and stay empty, so omitted.
type batchObject struct {
	*batch.Batch
	CompletionWindow string       `json:"completion_window"`
	Errors           *batchErrors `json:"errors"`

	OutputKey  string `json:"output_key,omitempty"`
	ErrorKey   string `json:"error_key,omitempty"`
	OutputFile string `json:"output_file,omitempty"`
	ErrorFile  string `json:"error_file,omitempty"`
}

// batchErrors is the errors list of a batch object.
type batchErrors struct {
	Object string          `json:"object"`
	Data   []batch.Problem `json:"data"`
}

// batchObjectList is a page of batch objects, in the OpenAI list shape.
type batchObjectList struct {
	Object  string         `json:"object"`
	Data    []*batchObject `json:"data"`
	FirstID string         `json:"first_id,omitempty"`
	LastID  string         `json:"last_id,omitempty"`
	HasMore bool           `json:"has_more"`
}

// object renders bt for the API. Finalisation registers a batch's result
// files before the batch ends. Only for batches finalised by older workers,
// which did not, are they registered here, on the first look (when that
// fails the ids are still given, and the files appear on a later look).
func (b *batchAPI) object(ctx context.Context, bt *batch.Batch) *batchObject {
	o := &batchObject{Batch: bt, CompletionWindow: windowText(bt.CompletionWindow)}
	if len(bt.Errors) > 0 {
		o.Errors = &batchErrors{Object: "list", Data: bt.Errors}
	}
	if err := b.svc.EnsureResultFiles(ctx, bt); err != nil {
		b.logger.Warn("batch result files not registered", "batch", bt.ID, "err", err)
	}
	return o
}

// page renders a page of batches.
func (b *batchAPI) page(ctx context.Context, bs []*batch.Batch, more bool) batchObjectList {
	l := batchObjectList{Object: "list", Data: make([]*batchObject, len(bs)), HasMore: more}
	for i, bt := range bs {
		l.Data[i] = b.object(ctx, bt)
	}
	if len(bs) > 0 {
		l.FirstID, l.LastID = bs[0].ID, bs[len(bs)-1].ID
	}
	return l
}

// windowText writes a completion window as OpenAI does ("24h"), not as
// time.Duration.String ("24h0m0s").
func windowText(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	s = d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
