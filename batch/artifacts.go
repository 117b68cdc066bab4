package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/generation"
)

// Artifact layout of a batch, under "batches/<id>/":
//
//	input/000000.jsonl           one chunk's rows: {"line":N,"request":{...}}
//	invalid.jsonl                lines --skip-invalid left out: {"line":N,"result":{...}}
//	chunks/000000-<attempt>.jsonl one run's output of a chunk: {"line":N,"result":{...}};
//	                             the chunk hash in Redis says which run counted
//	output.jsonl, errors.jsonl   the merged results, in input order
//
// Chunk inputs and outputs are deleted once the batch is finalised.

func batchPrefix(id string) string { return "batches/" + id + "/" }

func inputKey(id string, chunk int) string {
	return fmt.Sprintf("%sinput/%06d.jsonl", batchPrefix(id), chunk)
}

// chunksPrefix is the folder of every chunk output of a batch (stores list
// by folder, not by any prefix).
func chunksPrefix(id string) string { return batchPrefix(id) + "chunks/" }

// chunkRunsPrefix starts the key of every run's output of chunk.
func chunkRunsPrefix(id string, chunk int) string {
	return fmt.Sprintf("%s%06d-", chunksPrefix(id), chunk)
}

func chunkOutputKey(id string, chunk int, attempt string) string {
	return chunkRunsPrefix(id, chunk) + attempt + ".jsonl"
}

func invalidKey(id string) string { return batchPrefix(id) + "invalid.jsonl" }
func outputKey(id string) string  { return batchPrefix(id) + "output.jsonl" }
func errorKey(id string) string   { return batchPrefix(id) + "errors.jsonl" }

// lineResult is one result with the input line it answers, so results from
// different chunks and the invalid lines merge back into input order.
type lineResult struct {
	Line   int                     `json:"line"`
	Result generation.ResponseLine `json:"result"`
}

// putJSONL stores values as JSON lines under key, streaming through a pipe.
func putJSONL[T any](ctx context.Context, store artifact.Store, key string, values []T) error {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriter(pw)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		for _, v := range values {
			if err := enc.Encode(v); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(bw.Flush())
	}()
	err := store.Put(ctx, key, pr)
	pr.CloseWithError(err) // unblocks the writer if Put stopped early
	return err
}

// readJSONL decodes every JSON value of the object under key.
func readJSONL[T any](ctx context.Context, store artifact.Store, key string, each func(T) error) error {
	rc, err := store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(rc, 64<<10))
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if err := each(v); err != nil {
			return err
		}
	}
	return nil
}

// errorResult is the result line of a request of batch id that did not run.
func errorResult(id string, line int, customID, code, msg string) lineResult {
	return lineResult{Line: line, Result: generation.ResponseLine{
		ID: generation.LineID(generation.LineIDPrefix, id, line, customID), CustomID: customID,
		Error: &generation.LineError{Code: code, Message: msg, Line: line},
	}}
}
