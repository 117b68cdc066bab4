package batch

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/files"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// A finalisation that dies after registering the result files and before
// ending the batch is retried: the retry registers nothing again, the ids
// and file objects stay as they were, and a finalisation run once more
// after the end changes nothing either.
func TestResultFilesRegisteredOnceAcrossRetries(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	r := &Runner{Service: e.svc, Models: jobs.NewDeps(quietLogger()).Models}
	b, ids := createAndRun(t, r, 6, 3)

	// The first run, up to its registration.
	sealAndMerge(t, r, b.ID)
	// Date the merged files back, so a second registration, which would
	// take the rewritten files' time, shows in created_at.
	past := time.Now().Add(-time.Hour)
	for _, key := range []string{outputKey(b.ID), errorKey(b.ID)} {
		if err := os.Chtimes(r.Artifacts.Location(key), past, past); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.registerResultFiles(ctx, b.ID, outputKey(b.ID), errorKey(b.ID)); err != nil {
		t.Fatal(err)
	}
	before, more, err := r.Files.List(ctx, files.ListOptions{Limit: 10})
	if err != nil || more || len(before) != 2 {
		t.Fatalf("files after the first run: %d, more %v, %v", len(before), more, err)
	}

	// The retry, to the end; then once more.
	fin := &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: b.ID}}
	for run := range 2 {
		if err := r.Finalize(ctx, fin); err != nil {
			t.Fatalf("finalisation %d: %v", run+2, err)
		}
		after, more, err := r.Files.List(ctx, files.ListOptions{Limit: 10})
		if err != nil || more || len(after) != 2 {
			t.Fatalf("files after finalisation %d: %d, more %v, %v", run+2, len(after), more, err)
		}
		for i := range after {
			if *after[i] != *before[i] {
				t.Fatalf("finalisation %d changed file %d: %+v, was %+v", run+2, i, after[i], before[i])
			}
		}
	}
	end, err := r.Get(ctx, b.ID)
	if err != nil || end.Status != StatusCompleted {
		t.Fatalf("ended %+v, %v", end, err)
	}
	for _, id := range []string{end.OutputFileID, end.ErrorFileID} {
		if id != before[0].ID && id != before[1].ID {
			t.Fatalf("batch names file %s; registered are %s and %s", id, before[0].ID, before[1].ID)
		}
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, ids, out, errs)
	checkResultFiles(t, e.svc, end)
}

// A batch finalised before finalisation registered its result files has
// them registered on its first look (EnsureResultFiles); one finalised now
// needs nothing, and a result file deleted through the Files API stays
// deleted.
func TestEnsureResultFilesForEarlierBatches(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := context.Background()
	r := &Runner{Service: e.svc, Models: jobs.NewDeps(quietLogger()).Models}
	b, _ := createAndRun(t, r, 4, 2)
	if err := r.Finalize(ctx, &pipeline.Job[FinalizeArgs]{Args: FinalizeArgs{BatchID: b.ID}}); err != nil {
		t.Fatal(err)
	}
	// What an earlier worker left: the batch ended, its result files are
	// no files and the record does not say they are.
	rdb := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DB: testRedisDB})
	defer rdb.Close()
	outID, errID := files.ResultID(b.ID, FileOutput), files.ResultID(b.ID, FileErrors)
	if err := rdb.Del(ctx, files.KeyPrefix+outID, files.KeyPrefix+errID).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(ctx, recordKey(b.ID), "result_files").Err(); err != nil {
		t.Fatal(err)
	}
	old, err := e.svc.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Files.Get(ctx, outID); !errors.Is(err, files.ErrNotFound) {
		t.Fatalf("the earlier batch's output file before its first look: %v", err)
	}
	if err := e.svc.EnsureResultFiles(ctx, old); err != nil {
		t.Fatal(err)
	}
	checkResultFiles(t, e.svc, old)

	if err := e.svc.Files.Delete(ctx, outID); err != nil {
		t.Fatal(err)
	}
	now, err := e.svc.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.EnsureResultFiles(ctx, now); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Files.Get(ctx, outID); !errors.Is(err, files.ErrNotFound) {
		t.Fatalf("a deleted output file came back: %v", err)
	}
	if _, err := e.svc.Files.Get(ctx, errID); err != nil {
		t.Fatalf("error file: %v", err)
	}
}
