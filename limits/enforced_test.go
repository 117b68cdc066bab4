package limits_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/auth"
	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
	"github.com/tandem-ai/tandem/registry"
)

// enforcement says how one limit is held: exceed runs the public code that
// checks it with input one past the limit and returns the error, which must
// contain every string of names (the field, line or setting to fix). A
// limit whose check needs a server, a huge allocation or internals is
// covered by a test of its own package instead (covered), and a limit that
// is a cap rather than a refusal says what happens instead (capped), with
// the test that shows it.
type enforcement struct {
	exceed  func(t *testing.T) error
	names   []string
	covered string   // "pkg.TestName": the test that exceeds it
	mention []string // what that test's source must mention, beside the limit's own names
	capped  string   // what happens past it, when nothing is refused
	// check verifies a cap directly, failing the test itself.
	check func(t *testing.T)
	// untested says why no test exceeds the limit (it would take minutes
	// or gigabytes); TestEveryLimitIsEnforced lists these in its log.
	untested string
}

// over is the error of exceeding a limit through fn.
func over(fn func(t *testing.T) error, names ...string) enforcement {
	return enforcement{exceed: fn, names: names}
}

// checked runs a cap's own check (fn fails the test itself).
func checked(fn func(t *testing.T), what string) enforcement {
	return enforcement{check: fn, capped: what}
}

func coveredBy(test string, mention ...string) enforcement {
	return enforcement{covered: test, mention: mention}
}

func cappedBy(test, what string, mention ...string) enforcement {
	return enforcement{covered: test, capped: what, mention: mention}
}

func validateConfig(mutate func(c *pipeline.Config)) func(*testing.T) error {
	return func(*testing.T) error {
		c := pipeline.DefaultConfig()
		mutate(&c)
		return c.Validate()
	}
}

func requestLine(body string) func(*testing.T) error {
	return func(*testing.T) error {
		_, err := generation.ParseRequestLine([]byte(`{"custom_id":"a","body":`+body+`}`), 7)
		return err
	}
}

func samplingParams(p model.SamplingParams) func(*testing.T) error {
	return func(*testing.T) error {
		if p.MaxTokens == 0 {
			p.MaxTokens = 4
		}
		if p.N == 0 {
			p.N = 1
		}
		return p.Validate()
	}
}

func parseSchedule(data string) func(*testing.T) error {
	return func(*testing.T) error {
		_, err := pipeline.ParseSchedule("sched.json", []byte(data))
		return err
	}
}

func finetuneOptions(mutate func(o *finetune.Options)) func(*testing.T) error {
	return func(*testing.T) error {
		o := finetune.Options{InitConfig: &model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 16, LayerNormEpsilon: 1e-5}, Data: "d.txt"}
		o = o.WithDefaults()
		mutate(&o)
		return o.Validate()
	}
}

func modelConfig(mutate func(c *model.Config)) func(*testing.T) error {
	return func(*testing.T) error {
		c := model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 16, LayerNormEpsilon: 1e-5}
		mutate(&c)
		b, err := json.Marshal(map[string]any{"n_layer": c.NLayer, "n_head": c.NHead, "n_embd": c.NEmbd, "n_positions": c.NPositions, "vocab_size": c.VocabSize})
		if err != nil {
			return err
		}
		_, err = model.ParseConfig(b)
		return err
	}
}

func payload(kind string, v any) func(*testing.T) error {
	return func(*testing.T) error {
		b, _ := json.Marshal(v)
		return jobs.ValidatePayload(kind, b)
	}
}

func recsEvents(csv string, lim recsys.Limits) func(*testing.T) error {
	return func(*testing.T) error {
		return recsys.ReadEvents(strings.NewReader(csv), recsys.FormatCSV, lim, func(int, recsys.Event) error { return nil })
	}
}

func recsStore(lim recsys.Limits, events ...recsys.Event) func(*testing.T) error {
	return func(*testing.T) error {
		st, err := recsys.NewStore(recsys.StoreConfig{Limits: lim})
		if err != nil {
			return err
		}
		for _, ev := range events {
			if err := st.Add(ev); err != nil {
				return err
			}
		}
		return nil
	}
}

func tokenFile(text string) func(*testing.T) error {
	return func(*testing.T) error {
		_, err := auth.ParseTokens(strings.NewReader(text), "tokens.txt")
		return err
	}
}

func template(src string, row map[string]any) func(*testing.T) error {
	return func(*testing.T) error {
		tp, err := batch.ParseTemplate("t", src)
		if err != nil {
			return err
		}
		_, err = tp.Render(row)
		return err
	}
}

var token16 = strings.Repeat("k", 16)

// enforcements holds one entry per constant of package limits.
var enforcements = map[string]enforcement{
	// Jobs and queues.
	"PayloadBytes": over(payload(jobs.KindPing, map[string]any{"record": "r", "fail": "", "sleep_ms": 0, "x": strings.Repeat("a", limits.PayloadBytes)}), "ping payload", "over the limit"),
	"KindLen":      over(func(*testing.T) error { return pipeline.ValidateKind(strings.Repeat("k", limits.KindLen+1)) }, "kind"),
	"QueueNameLen": over(func(*testing.T) error { return pipeline.ValidateQueueName(strings.Repeat("q", limits.QueueNameLen+1)) }, "queue"),
	"Queues": over(validateConfig(func(c *pipeline.Config) {
		c.Queues = map[string]int{}
		for i := 0; i <= limits.Queues; i++ {
			c.Queues[fmt.Sprintf("q%d", i)] = 1
		}
	}), "Queues", "TANDEM_QUEUES"),
	"QueueWeight": over(func(*testing.T) error {
		_, err := pipeline.ParseQueues(fmt.Sprintf("a=%d", limits.QueueWeight+1))
		return err
	}, `queue "a"`, "weight"),
	"Concurrency":     over(validateConfig(func(c *pipeline.Config) { c.Concurrency = limits.Concurrency + 1 }), "Concurrency", "--concurrency"),
	"ShutdownTimeout": over(validateConfig(func(c *pipeline.Config) { c.ShutdownTimeout = limits.ShutdownTimeout + 1 }), "ShutdownTimeout"),
	"RetryDelay":      over(validateConfig(func(c *pipeline.Config) { c.RetryMaxDelay = limits.RetryDelay + 1 }), "RetryMaxDelay"),
	"MinPollInterval": over(validateConfig(func(c *pipeline.Config) { c.PollInterval = limits.MinPollInterval - 1 }), "PollInterval"),
	"PollInterval":    over(validateConfig(func(c *pipeline.Config) { c.PollInterval = limits.PollInterval + 1 }), "PollInterval"),
	"RedisDB": over(validateConfig(func(c *pipeline.Config) {
		c.RedisURL = fmt.Sprintf("redis://127.0.0.1:6379/%d", limits.RedisDB)
	}), "RedisURL", "database number"),
	"DefaultJobRetries":    cappedBy("pipeline.TestRegistryOptionsAndKinds", "a kind that sets no MaxRetry is retried this often, then archived"),
	"DefaultJobTimeout":    cappedBy("pipeline.TestRegistryOptionsAndKinds", "a kind that sets no Timeout has its context cancelled after this long"),
	"MetricLabelSets":      cappedBy("pipeline.TestMetricsReuseAndLabelCap", `further {kind, queue} pairs are counted as kind="other"`),
	"ScheduleBytes":        over(func(t *testing.T) error { return loadBigSchedule(t) }, "sched.json", "over the limit"),
	"ScheduleEntries":      over(parseSchedule(scheduleOf(limits.ScheduleEntries+1, "e")), "sched.json:", "more than"),
	"ScheduleEntryNameLen": over(parseSchedule(scheduleOf(1, strings.Repeat("n", limits.ScheduleEntryNameLen+1))), "sched.json:", "name"),
	"ScheduleCatchUp":      cappedBy("pipeline.TestPeriodicSkipsTicksPastCatchUp", "ticks later than this are skipped, not enqueued in a burst"),

	// Event bus.
	"EventBytes":              coveredBy("pipeline.TestBusPublishRefusesBadInput"),
	"SubjectTokenLen":         over(func(*testing.T) error { return pipeline.ValidateID(strings.Repeat("i", limits.SubjectTokenLen+1)) }, "id is", "bytes"),
	"MsgIDLen":                coveredBy("pipeline.TestBusPublishRefusesBadInput"),
	"DeadLetterReasonBytes":   cappedBy("pipeline.TestBusHandlerPanicIsAFailure", "a longer handler error is cut to this many bytes in the dead letter"),
	"DeadLetterBytes":         cappedBy("pipeline.TestDeadLetterOfLargestEventFits", "the dead-letter stream's MaxMsgSize; the envelope of the largest event with the longest reason fits"),
	"ConsumerMaxDeliver":      coveredBy("pipeline.TestBusConsumeRefusesBadSpec"),
	"ConsumerConcurrency":     coveredBy("pipeline.TestBusConsumeRefusesBadSpec"),
	"MinConsumerAckWait":      coveredBy("pipeline.TestBusConsumeRefusesBadSpec"),
	"ConsumerDuration":        coveredBy("pipeline.TestBusConsumeRefusesBadSpec"),
	"EmbeddedNATSStoreBytes":  {untested: "a cap on the embedded server's JetStream storage, enforced by nats-server; reaching it takes a GiB of messages"},
	"EmbeddedNATSMemoryBytes": {untested: "likewise, for memory storage"},

	// Requests, batches, the API.
	"RequestLineBytes": over(func(*testing.T) error {
		lines, err := generation.ReadRequestLines(strings.NewReader(strings.Repeat("x", limits.RequestLineBytes+1)+"\n"), 0)
		if err != nil {
			return err
		}
		return lines[0].Err
	}, "line 1", "line_too_long"),
	"PromptBytes": over(requestLine(fmt.Sprintf(`{"prompt":%q}`, strings.Repeat("p", limits.PromptBytes+1))), "line 7", "body.prompt"),
	"CustomIDLen": over(func(*testing.T) error {
		_, err := generation.ParseRequestLine([]byte(fmt.Sprintf(`{"custom_id":%q,"body":{"prompt":"x"}}`, strings.Repeat("c", limits.CustomIDLen+1))), 7)
		return err
	}, "line 7", "custom_id"),
	"RequestLines": over(func(*testing.T) error {
		_, err := generation.ReadRequestLines(numberedRequests(limits.RequestLines+1), limits.RequestLines)
		return err
	}, fmt.Sprintf("line %d", limits.RequestLines+1), "request lines"),
	"DecodeRows": over(payload(jobs.KindGenerate, jobs.GenerateArgs{Model: "builtin:tiny", Input: "i", Output: "o", BatchSize: limits.DecodeRows + 1}), "batch_size"),
	"BatchChunks": over(func(*testing.T) error {
		return batch.ChunkArgs{BatchID: "batch_abc", Chunk: limits.BatchChunks}.Validate()
	}, "chunk"),
	"BatchIDLen": over(func(*testing.T) error { return batch.ValidateID("batch_" + strings.Repeat("a", limits.BatchIDLen)) }, "batch_id"),
	"EvalBytes":  coveredBy("limits.TestEvalInputLimit"),
	"PingSleep":  over(payload(jobs.KindPing, jobs.PingArgs{SleepMS: int((limits.PingSleep + time.Millisecond).Milliseconds())}), "sleep_ms"),
	"WebhookURLs": over(func(*testing.T) error {
		urls := make([]string, limits.WebhookURLs+1)
		for i := range urls {
			urls[i] = fmt.Sprintf("https://h%d.example/hook", i)
		}
		_, err := batch.ParseWebhookURLs(strings.Join(urls, ","))
		return err
	}, "TANDEM_WEBHOOK_URLS"),
	"WebhookURLLen": over(func(*testing.T) error {
		_, err := batch.ParseWebhookURLs("https://h.example/" + strings.Repeat("p", limits.WebhookURLLen))
		return err
	}, "TANDEM_WEBHOOK_URLS"),
	"WebhookTimeout":       {untested: "the webhook client's timeout: a slower receiver fails the delivery, which is retried; a test would wait 10 s"},
	"WebhookResponseBytes": {untested: "how much of a webhook's answer is drained before the connection is reused; nothing is refused"},
	"BatchInputBytes":      coveredBy("batch.TestPlanHardErrors"),
	"BatchFileRequests":    coveredBy("batch.TestCheckFileStreamsEveryProblem"),
	"BatchRows": over(func(*testing.T) error {
		_, err := batch.PlanInput(numberedRequests(limits.BatchRows+1), batch.Input{Model: "builtin:tiny"})
		return err
	}, fmt.Sprintf("line %d", limits.BatchRows+1), "request lines"),
	"BatchReportedProblems": checked(func(t *testing.T) {
		plan, err := batch.PlanInput(strings.NewReader(strings.Repeat("{oops\n", limits.BatchReportedProblems+1)), batch.Input{Model: "builtin:tiny"})
		if err != nil {
			t.Fatal(err)
		}
		if r := plan.Report; len(r.Problems) != limits.BatchReportedProblems || r.Unlisted != 1 {
			t.Fatalf("report lists %d problems and counts %d more; want %d and 1", len(r.Problems), r.Unlisted, limits.BatchReportedProblems)
		}
	}, "problems past it are counted in Report.Unlisted, not listed"),
	"BatchChunkSize":           coveredBy("batch.TestCreateOptionsChecks"),
	"MinBatchCompletionWindow": coveredBy("batch.TestCreateOptionsChecks"),
	"BatchCompletionWindow":    coveredBy("batch.TestCreateOptionsChecks"),
	"BatchMetadataPairs": over(func(*testing.T) error {
		m := map[string]string{}
		for i := 0; i <= limits.BatchMetadataPairs; i++ {
			m[fmt.Sprint("k", i)] = "v"
		}
		return batch.ValidateMetadata(m)
	}, "metadata"),
	"BatchMetadataKeyLen": over(func(*testing.T) error {
		return batch.ValidateMetadata(map[string]string{strings.Repeat("k", limits.BatchMetadataKeyLen+1): "v"})
	}, "metadata"),
	"BatchMetadataValueLen": over(func(*testing.T) error {
		return batch.ValidateMetadata(map[string]string{"k": strings.Repeat("v", limits.BatchMetadataValueLen+1)})
	}, "metadata", `"k"`),
	"BatchListPage":       coveredBy("cmd/producer.TestBatchAPI"),
	"TemplateBytes":       over(template(strings.Repeat("x", limits.TemplateBytes+1), nil), "template", "limit"),
	"TemplateRenderBytes": over(template(`{{range 300}}{{printf "%999d" 1}}{{end}}`, nil), "template", "output exceeds"),
	"TemplateRenderSteps": over(template(`{{range 100001}}{{end}}`, nil), "template", "loop iterations"),
	"TemplateRenderTime":  coveredBy("batch.TestTemplateRenderTime"),
	"TemplateWorkBytes":   over(template(`{{$f := printf "%999s" "x"}}`+strings.Repeat(`{{$x := print $f $f $f $f $f $f $f $f $f $f}}`, 500), nil), "template", "functions built more than"),
	"TemplateFormatWidth": over(template(fmt.Sprintf(`{{printf "%%%dd" 1}}`, limits.TemplateFormatWidth+1), nil), "printf"),
	"PostStops": over(func(*testing.T) error {
		return batch.PostProcess{Stop: make([]string, limits.PostStops+1)}.Validate()
	}, "postprocess.stop"),
	"PostStopLen": over(func(*testing.T) error {
		return batch.PostProcess{Stop: []string{strings.Repeat("s", limits.PostStopLen+1)}}.Validate()
	}, "postprocess.stop"),
	"PostMaxChars": over(func(*testing.T) error {
		return batch.PostProcess{MaxChars: limits.PostMaxChars + 1}.Validate()
	}, "max_chars"),
	"APIJobBodyBytes":        coveredBy("cmd/producer.TestBatchAPI"),
	"APIBatchJSONBytes":      coveredBy("cmd/producer.TestBatchAPI"),
	"APIPromoteBodyBytes":    coveredBy("cmd/producer.TestFinetuneRoutes"),
	"APIRecsUserLen":         coveredBy("cmd/producer.TestRecsRoutes"),
	"InteractivePromptBytes": over(payload(jobs.KindInteractive, map[string]any{"id": "cmpl-1", "body": map[string]any{"model": "builtin:tiny", "prompt": strings.Repeat("p", limits.InteractivePromptBytes+1)}}), "prompt", "at most"),
	"InteractiveTokens":      over(payload(jobs.KindInteractive, map[string]any{"id": "cmpl-1", "body": map[string]any{"model": "builtin:tiny", "prompt": "p", "max_tokens": limits.InteractiveTokens + 1}}), "max_tokens", "out of range"),
	"EmbeddingInputs":        over(payload(jobs.KindEmbeddings, map[string]any{"id": "embd-1", "body": map[string]any{"model": "builtin:tiny", "input": make([]string, limits.EmbeddingInputs+1)}}), "input", "at most"),
	"APIEmbeddingsBodyBytes": coveredBy("cmd/producer.TestServeGuardsEmbeddings"),
	"InteractiveChoices":     over(payload(jobs.KindInteractive, map[string]any{"id": "cmpl-1", "body": map[string]any{"model": "builtin:tiny", "prompt": "p", "n": limits.InteractiveChoices + 1}}), "n:", "out of range"),
	"InteractivePromptChoices": over(payload(jobs.KindInteractive, map[string]any{"id": "cmpl-1", "body": map[string]any{"model": "builtin:tiny", "n": 2},
		"prompts": []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}}), "prompt", "n = 2", "at most"),
	"APIHeaderTime":    coveredBy("cmd/producer.TestSlowBodiesAreCutOff"),
	"APIBodyGrace":     coveredBy("cmd/producer.TestSlowBodiesAreCutOff"),
	"MinAPIBodyRate":   coveredBy("cmd/producer.TestSlowBodiesAreCutOff"),
	"APIBodyDrainTime": coveredBy("cmd/producer.TestSlowBodiesAreCutOff"),
	"LossCurveBytes":   coveredBy("cmd/producer.TestFinetuneRoutes"),
	"APITaskIDLen":     coveredBy("cmd/producer.TestCreateJobValidatesEveryField"),
	"JobMaxRetry":      coveredBy("cmd/producer.TestCreateJobValidatesEveryField"),
	"ArtifactKeyLen": over(func(*testing.T) error {
		return artifact.ValidateKey(strings.Repeat("k", limits.ArtifactKeyLen+1))
	}, "bad key"),
	"ModelNameLen": over(func(*testing.T) error {
		return registry.ValidateName(strings.Repeat("m", limits.ModelNameLen+1))
	}, "model name"),
	"RunMarkerBytes":         coveredBy("jobs.TestRunMarkerLimit"),
	"DefaultModelCacheBytes": cappedBy("generation.TestModelCacheBytesFromEnv", "least recently used models are dropped past it (TANDEM_MODEL_CACHE_BYTES; generation.TestModelStoreLRU)"),

	// Sampling and models.
	"MaxTokens":              over(requestLine(fmt.Sprintf(`{"prompt":"x","max_tokens":%d}`, limits.MaxTokens+1)), "line 7", "max_tokens"),
	"Choices":                over(samplingParams(model.SamplingParams{N: limits.Choices + 1}), "n:"),
	"StopSequences":          over(samplingParams(model.SamplingParams{Stop: make([]string, limits.StopSequences+1)}), "stop"),
	"StopBytes":              over(samplingParams(model.SamplingParams{Stop: []string{strings.Repeat("s", limits.StopBytes+1)}}), "stop[0]"),
	"Logprobs":               over(samplingParams(model.SamplingParams{Logprobs: limits.Logprobs + 1}), "logprobs"),
	"DefaultDecodeRows":      cappedBy("model.TestGenerateDefaultRows", "more rows are decoded in several passes of this many"),
	"SafetensorsHeaderBytes": coveredBy("model.TestSafetensorsRejectsHostileFiles", "huge header length"),
	"TensorDims":             coveredBy("model.TestSafetensorsRejectsHostileFiles", "deep rank"),
	"ModelConfigBytes":       coveredBy("limits.TestModelConfigFileLimit"),
	"ModelLayers":            over(modelConfig(func(c *model.Config) { c.NLayer = limits.ModelLayers + 1 }), "n_layer"),
	"ModelHeads":             over(modelConfig(func(c *model.Config) { c.NHead = limits.ModelHeads + 1 }), "n_head"),
	"ModelEmbd":              over(modelConfig(func(c *model.Config) { c.NEmbd = limits.ModelEmbd + 1 }), "n_embd"),
	"ModelPositions":         over(modelConfig(func(c *model.Config) { c.NPositions = limits.ModelPositions + 1 }), "n_positions"),
	"ModelVocab":             over(modelConfig(func(c *model.Config) { c.VocabSize = limits.ModelVocab + 1 }), "vocab_size"),
	"ModelParams": over(modelConfig(func(c *model.Config) {
		c.NLayer, c.NHead, c.NEmbd, c.NPositions, c.VocabSize = 256, 64, 8192, 8192, 50257
	}), "parameters", "exceeds the limit"),
	"ActivationBytes": over(func(t *testing.T) error {
		// GPT-2's vocabulary makes the logits alone outgrow the limit.
		m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 64, VocabSize: 50257, LayerNormEpsilon: 1e-5}, 1)
		if err != nil {
			t.Fatal(err)
		}
		B, T := (limits.ActivationBytes/(50257*4))/64+1, 64
		_, err = m.Forward(make([]int32, B*T), B, T, nil)
		return err
	}, "forward: B=", "activations"),
	"KVCacheBytes": over(func(t *testing.T) error {
		m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 16, LayerNormEpsilon: 1e-5}, 1)
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.NewKVCache(limits.KVCacheBytes/(2*8*8*4)+1, 8)
		return err
	}, "kv cache: batch="),
	"ROUGETokens": over(func(*testing.T) error {
		_, err := model.ROUGEL(strings.Repeat("w ", limits.ROUGETokens+1), []string{"w"})
		return err
	}, "tokens"),

	// Fine-tuning.
	"DatasetBytes":     coveredBy("limits.TestDatasetFileLimit"),
	"DatasetLineBytes": over(dataset(strings.Repeat("w", limits.DatasetLineBytes+1)+"\n"), "line 1"),
	"DatasetExamples":  {untested: "two million examples take minutes to tokenise under -race; the count is checked before each example is added"},
	"MinDatasetExamples": over(func(*testing.T) error {
		_, err := finetune.SplitExamples(make([]finetune.Example, limits.MinDatasetExamples-1), 0.1, 0.1, 1)
		return err
	}, "examples"),
	"Epochs":                over(finetuneOptions(func(o *finetune.Options) { o.Epochs = limits.Epochs + 1 }), "epochs"),
	"TrainBatchSize":        over(finetuneOptions(func(o *finetune.Options) { o.BatchSize = limits.TrainBatchSize + 1 }), "batch_size"),
	"GradAccum":             over(finetuneOptions(func(o *finetune.Options) { o.Accum = limits.GradAccum + 1 }), "accum"),
	"SeqLen":                over(finetuneOptions(func(o *finetune.Options) { o.SeqLen = limits.SeqLen + 1 }), "seq_len"),
	"GenEval":               over(finetuneOptions(func(o *finetune.Options) { o.GenEval = limits.GenEval + 1 }), "gen_eval"),
	"TotalSteps":            over(totalSteps, "epochs:", "steps in all"),
	"CheckpointHeaderBytes": coveredBy("finetune.TestCheckpointRefusesHugeHeader"),
	"FeedbackIDLen": over(func(*testing.T) error {
		return collectFeedback(feedback.Event{GenerationID: strings.Repeat("g", limits.FeedbackIDLen+1), Action: feedback.ActionAccept, Prompt: "p", Completion: "c"})
	}, "generation_id"),
	"FeedbackTextBytes": over(func(*testing.T) error {
		return collectFeedback(feedback.Event{GenerationID: "g", Action: feedback.ActionAccept, Prompt: "p", Completion: strings.Repeat("c", limits.FeedbackTextBytes+1)})
	}, "completion"),

	// Recommendations and the loop.
	"RecsLineBytes":           over(recsEvents("user,item,event\nu1,"+strings.Repeat("i", limits.RecsLineBytes)+",click\n", recsys.Limits{}), "line 2"),
	"RecsIDBytes":             over(recsStore(recsys.Limits{}, recsys.Event{User: "u1", Item: strings.Repeat("i", limits.RecsIDBytes+1), Type: "click"}), "item"),
	"RecsUsers":               over(recsStore(recsys.Limits{MaxUsers: 1}, recsys.Event{User: "u1", Item: "i1", Type: "click"}, recsys.Event{User: "u2", Item: "i1", Type: "click"}), "user"),
	"RecsItems":               over(recsStore(recsys.Limits{MaxItems: 1}, recsys.Event{User: "u1", Item: "i1", Type: "click"}, recsys.Event{User: "u1", Item: "i2", Type: "click"}), "item"),
	"RecsCells":               coveredBy("recsys.TestStoreLimits", "MaxCells"),
	"RecsAbsValue":            over(recsStore(recsys.Limits{}, recsys.Event{User: "u1", Item: "i1", Type: "rating", Value: 2 * limits.RecsAbsValue}), "value"),
	"RecsKinds":               coveredBy("recsys.TestStoreLimits", "MaxKinds"),
	"RecsK":                   coveredBy("recsys.TestConfigValidation", "K over limit"),
	"RecsNeighbors":           over(payload(jobs.KindRecsRebuild, jobs.RecsRebuildArgs{Interactions: "i.csv", Publish: true, Neighbors: limits.RecsNeighbors + 1}), "neighbors"),
	"RecsTop":                 over(payload(jobs.KindRecsRebuild, jobs.RecsRebuildArgs{Interactions: "i.csv", Publish: true, Top: limits.RecsTop + 1}), "top"),
	"RecsPerRequest":          over(recommendTooMany, "n"),
	"RecsEvalEvents":          {untested: "recs-eval refuses a log of more events, naming the file; a test would hold 20 million events"},
	"RecsEventHalfLivesAhead": coveredBy("recsys.TestDecayAndWeights", "half-lives ahead"),
	"RecsRefreshPerEvent":     {untested: "a cap: users past it keep their lists until the next rebuild; cmd/scheduler's feedback tests run the refresh below it"},
	"RecordTextBytes":         cappedBy("loop.TestStoreRefusesAndCuts", "longer prompt and text are cut at a rune boundary when stored"),
	"RecordIDBytes":           coveredBy("loop.TestStoreRefusesAndCuts"),
	"RatingRevisions":         coveredBy("loop.TestRatingRevisionsAreBounded", "MaxRatingRevisions"),
	"MinFeedbackRating":       over(feedbackEvent(`{"user":"u","item":"i","event":"rating","value":0.5}`), `"value"`, "[1, 5]"),
	"FeedbackRating":          over(feedbackEvent(`{"user":"u","item":"i","event":"rating","value":5.5}`), `"value"`, "[1, 5]"),
	"FeedbackCount":           over(feedbackEvent(`{"user":"u","item":"i","event":"click","value":101}`), `"value"`, "[1, 100]"),
	"FeedbackDwellSeconds":    over(feedbackEvent(`{"user":"u","item":"i","event":"dwell","value":3601}`), `"value"`, "3600"),

	// API authentication.
	"TokenFileBytes": over(tokenFile(strings.Repeat("#", limits.TokenFileBytes+1)), "tokens.txt", "over the limit"),
	"Tokens": over(func(t *testing.T) error {
		var b strings.Builder
		for i := 0; i <= limits.Tokens; i++ {
			fmt.Fprintf(&b, "%s%08d t%d read\n", token16[:8], i, i)
		}
		return tokenFile(b.String())(t)
	}, "tokens.txt:", "more than"),
	"MinTokenLen":  over(tokenFile(token16[:limits.MinTokenLen-1]+" n read\n"), "tokens.txt:1", "token:"),
	"TokenLen":     over(tokenFile(strings.Repeat("t", limits.TokenLen+1)+" n read\n"), "tokens.txt:1", "token:"),
	"TokenNameLen": over(tokenFile(token16+" "+strings.Repeat("n", limits.TokenNameLen+1)+" read\n"), "tokens.txt:1", "name"),
}

// numberedRequests is n valid request lines.
func numberedRequests(n int) *strings.Reader {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"custom_id":"c%d","body":{"prompt":"x"}}`+"\n", i)
	}
	return strings.NewReader(b.String())
}

// totalSteps asks for a run of more optimizer steps than TotalSteps: many
// short rows, one per step, for the most epochs.
func totalSteps(t *testing.T) error {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.txt")
	if err := os.WriteFile(data, []byte(strings.Repeat("one two three four five six\n", 20_000)), 0o644); err != nil {
		t.Fatal(err)
	}
	o := finetune.Options{InitConfig: &model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: 50257, LayerNormEpsilon: 1e-5},
		Data: data, OutDir: filepath.Join(dir, "out"), Epochs: limits.Epochs, BatchSize: 1, SeqLen: 2}
	_, err := finetune.Run(context.Background(), o, finetune.Hooks{OnStep: func(finetune.StepEvent) { t.Error("training started") }})
	return err
}

// recommendTooMany asks a small model for more recommendations than one
// request may have.
func recommendTooMany(t *testing.T) error {
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []recsys.Event{{User: "u1", Item: "i1", Type: "click"}, {User: "u2", Item: "i1", Type: "click"}, {User: "u2", Item: "i2", Type: "click"}} {
		if err := st.Add(ev); err != nil {
			t.Fatal(err)
		}
	}
	m, err := recsys.Build(context.Background(), st, recsys.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Recommend("u1", recsys.RecOptions{N: limits.RecsPerRequest + 1})
	return err
}

func dataset(text string) func(*testing.T) error {
	return func(*testing.T) error {
		tok, err := model.NewTokenizer()
		if err != nil {
			return err
		}
		_, err = finetune.ParseDataset([]byte(text), finetune.FormatText, tok)
		return err
	}
}

func scheduleOf(n int, name string) string {
	entries := make([]string, n)
	for i := range entries {
		nm := name
		if n > 1 {
			nm = fmt.Sprintf("%s%d", name, i)
		}
		entries[i] = fmt.Sprintf(`{"name":%q,"spec":"@every 1h","kind":"ping","payload":{}}`, nm)
	}
	return "[" + strings.Join(entries, ",") + "]"
}

// collectFeedback hands ev to a fine-tune collector, which checks it
// before it needs Redis.
func collectFeedback(ev feedback.Event) error {
	col, err := finetune.NewFeedbackCollector(nil, "")
	if err != nil {
		return err
	}
	_, err = col.Collect(context.Background(), ev)
	return err
}

// feedbackEvent checks one feedback event as the intake does.
func feedbackEvent(body string) func(*testing.T) error {
	return func(*testing.T) error {
		_, err := feedback.Decode("", []byte(body))
		return err
	}
}

func loadBigSchedule(t *testing.T) error {
	path := filepath.Join(t.TempDir(), "sched.json")
	if err := os.WriteFile(path, []byte(strings.Repeat(" ", limits.ScheduleBytes+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := pipeline.LoadSchedule(path)
	return err
}

// Every limit is exceeded once, here or in the test it names, and the
// error says what to fix. A named test must exist and mention the limit
// (limits.Name, one of its aliases, or what the entry says to look for).
func TestEveryLimitIsEnforced(t *testing.T) {
	tests := testSources(t)
	seen := map[string]bool{}
	for _, l := range readLimits(t) {
		seen[l.Name] = true
		e, ok := enforcements[l.Name]
		switch {
		case !ok:
			t.Errorf("limits.%s: no entry in enforcements; exceed it here or name the test that does", l.Name)
		case e.exceed != nil:
			t.Run(l.Name, func(t *testing.T) {
				err := e.exceed(t)
				if err == nil {
					t.Fatalf("limits.%s: input one past the limit was accepted", l.Name)
				}
				for _, n := range e.names {
					if !strings.Contains(err.Error(), n) {
						t.Fatalf("limits.%s: error %q does not name %q", l.Name, err, n)
					}
				}
			})
		case e.check != nil:
			t.Run(l.Name, e.check)
		case e.untested != "":
			t.Logf("limits.%s is not exceeded by any test: %s", l.Name, e.untested)
		default:
			src, ok := tests[e.covered]
			if !ok {
				t.Errorf("limits.%s: covered by %s, which does not exist", l.Name, e.covered)
				continue
			}
			words := append([]string{"limits." + l.Name}, e.mention...)
			for _, a := range l.Aliases {
				words = append(words, a[strings.LastIndex(a, ".")+1:])
			}
			if !mentionsAny(src, words) {
				t.Errorf("limits.%s: %s mentions none of %v", l.Name, e.covered, words)
			}
		}
	}
	for name := range enforcements {
		if !seen[name] {
			t.Errorf("enforcements lists %s, which package limits does not define", name)
		}
	}
}

func mentionsAny(src string, words []string) bool {
	low := strings.ToLower(src)
	for _, w := range words {
		if strings.Contains(low, strings.ToLower(w)) {
			return true
		}
	}
	return false
}

// testSources maps "pkg.TestName" ("cmd/x.TestName" for commands) to the
// source of that test function, for every test in the tree.
func testSources(t *testing.T) map[string]string {
	t.Helper()
	root := repoRoot(t)
	re := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\)`)
	pkgRE := regexp.MustCompile(`(?m)^package (\w+)`)
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && p != root || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		src := string(b)
		pkg := ""
		if m := pkgRE.FindStringSubmatch(src); m != nil {
			pkg = strings.TrimSuffix(m[1], "_test")
		}
		if pkg == "main" {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			pkg = filepath.ToSlash(rel)
		}
		locs := re.FindAllStringSubmatchIndex(src, -1)
		for i, m := range locs {
			end := len(src)
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			out[pkg+"."+src[m[2]:m[3]]] = src[m[0]:end]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// An eval job refuses an input over EvalBytes, naming the field.
func TestEvalInputLimit(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "big.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(limits.EvalBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var out bytes.Buffer
	err = jobs.Exec(context.Background(), rootedDeps(t, dir), jobs.KindEval, []string{"--in", "big.txt"}, &out)
	if err == nil || !strings.Contains(err.Error(), `field "input"`) || !strings.Contains(err.Error(), "larger than the limit") || !pipeline.IsPermanent(err) {
		t.Fatalf("eval of a file over the limit: %v", err)
	}
}

// A config.json over ModelConfigBytes is refused before it is parsed.
func TestModelConfigFileLimit(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), bytes.Repeat([]byte(" "), limits.ModelConfigBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := model.LoadConfig(dir)
	if err == nil || !strings.Contains(err.Error(), "config") || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized config.json: %v", err)
	}
}

// A dataset file over DatasetBytes is refused before it is read whole.
func TestDatasetFileLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.txt")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(limits.DatasetBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tok, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	_, err = finetune.LoadDataset(path, finetune.FormatText, tok)
	if err == nil || !errors.Is(err, finetune.ErrBadDataset) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized dataset: %v", err)
	}
}

func rootedDeps(t *testing.T, dir string) *jobs.Deps {
	t.Helper()
	root, err := jobs.OpenDataRoot(pipeline.Config{DataRoot: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	d := jobs.NewDeps(nil)
	d.SetDataRoot(root)
	return d
}
