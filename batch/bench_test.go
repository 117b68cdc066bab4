package batch

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
)

// Benchmark settings: a batch of benchRows rows of builtin:tiny in chunks
// of benchChunk, decoded benchChunk rows at a time.
const (
	benchRows      = 128
	benchChunk     = 32
	benchMaxTokens = 32
)

// BenchmarkBatchVsDirect runs the same rows two ways in each iteration:
// through the whole pipeline (plan, record and chunk inputs, asynq via
// Redis, an in-process worker, chunk outputs to the artifact store,
// finalisation, until the record says completed) and directly through
// generation.GenerateLines in this process with the same decode batching. It
// reports both rates (from the median run of each, which a busy shared
// machine disturbs less than the mean) and their ratio; the pipeline's
// overhead is 1-ratio. Run it with -benchtime 5x or more.
func BenchmarkBatchVsDirect(b *testing.B) {
	e := newTestEnv(b, envOptions{workers: 1, poll: DefaultPollInterval})
	ctx := context.Background()
	input, _ := openAIInput(benchRows, benchMaxTokens)
	opts := CreateOptions{Model: "builtin:tiny", ChunkSize: benchChunk, BatchSize: benchChunk}

	plan, err := PlanInput(strings.NewReader(input), Input{Model: opts.Model})
	if err != nil {
		b.Fatal(err)
	}
	lines := make([]generation.InputLine, len(plan.Rows))
	for i, r := range plan.Rows {
		lines[i] = generation.InputLine{LineNo: r.Line, Request: r.Request}
	}
	direct := generation.NewModelStore(jobs.OpenEnvDataRoot)
	lm, err := direct.Get(opts.Model)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := direct.Tokenizer()
	if err != nil {
		b.Fatal(err)
	}
	runPipeline := func() time.Duration {
		start := time.Now()
		bt, _, err := e.svc.Create(ctx, strings.NewReader(input), opts)
		if err != nil {
			b.Fatal(err)
		}
		for {
			st, _, err := e.svc.Store.State(ctx, bt.ID)
			if err != nil {
				b.Fatal(err)
			}
			if st.Terminal() {
				if st != StatusCompleted {
					b.Fatalf("batch ended %s", st)
				}
				return time.Since(start)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	runDirect := func() time.Duration {
		start := time.Now()
		if _, err := generation.GenerateLines(ctx, lm, tok, lines, benchChunk, "bench", nil); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	runPipeline() // warm up: the worker loads the model and tokenizer
	runDirect()

	var pipe, dir []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate the order so drift in machine load hits both alike.
		if i%2 == 0 {
			pipe = append(pipe, runPipeline())
			dir = append(dir, runDirect())
		} else {
			dir = append(dir, runDirect())
			pipe = append(pipe, runPipeline())
		}
	}
	b.StopTimer()
	pipeRate, dirRate := benchRows/median(pipe).Seconds(), benchRows/median(dir).Seconds()
	b.ReportMetric(pipeRate, "pipeline_rows/s")
	b.ReportMetric(dirRate, "direct_rows/s")
	b.ReportMetric(pipeRate/dirRate, "ratio")
	fmt.Printf("batch of %d rows, chunk %d, max_tokens %d, builtin:tiny: pipeline %.1f rows/s, direct GenerateLines %.1f rows/s, ratio %.3f\n",
		benchRows, benchChunk, benchMaxTokens, pipeRate, dirRate, pipeRate/dirRate)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
