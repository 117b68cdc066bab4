package finetune

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
)

// Defaults for zero Options fields.
const (
	DefaultEpochs       = 3
	DefaultBatchSize    = 8
	DefaultSeqLen       = 128
	DefaultLRPretrain   = 2e-5 // fine-tuning a pretrained model
	DefaultLRScratch    = 1e-3 // training a small model from scratch
	DefaultWeightDecay  = 0.01
	DefaultMaxGradNorm  = 1.0
	DefaultDevFrac      = 0.1
	DefaultTestFrac     = 0.1
	DefaultGenMaxTokens = 32
)

// Limits on Options: they catch typos before hours of compute are spent.
const (
	MaxEpochs     = limits.Epochs
	MaxBatchSize  = limits.TrainBatchSize
	MaxAccum      = limits.GradAccum
	MaxSeqLen     = limits.SeqLen
	MaxGenEval    = limits.GenEval
	MaxTotalSteps = limits.TotalSteps
)

// Schedules.
const (
	ScheduleCosine   = "cosine"   // warmup, then cosine decay to MinLR
	ScheduleConstant = "constant" // warmup, then LR
)

// Options describe one fine-tuning run. Exactly one of BaseModel and
// InitConfig is set.
type Options struct {
	// BaseModel is a model directory (Hugging Face GPT-2 layout).
	BaseModel string `json:"base_model,omitempty"`
	// InitConfig trains a fresh model of this shape from scratch.
	InitConfig *model.Config `json:"init_config,omitempty"`
	// Data is the dataset file; Format is FormatText, FormatJSONL or ""
	// (from the file name).
	Data   string `json:"data"`
	Format string `json:"format,omitempty"`
	// OutDir receives the model (config.json, model.safetensors), the
	// checkpoint, the best model so far (best/), loss.png and result.json.
	OutDir string `json:"-"`
	// Root, when set, is the directory Data and OutDir are names in: a
	// job's data root (dataroot.Root.OS), so that the run reads and writes
	// nothing outside it. nil: Data and OutDir are file system paths.
	Root *os.Root `json:"-"`
	// BaseRoot, when set, is the base model's directory, already open (a
	// model directory in the data root, or a registered version's); the
	// model is read through it and BaseModel only names it in records.
	// nil: BaseModel is a file system path.
	BaseRoot *os.Root `json:"-"`

	Epochs    int `json:"epochs"`
	BatchSize int `json:"batch_size"` // rows per micro-batch
	SeqLen    int `json:"seq_len"`    // tokens per row, at most n_positions
	Accum     int `json:"accum"`      // micro-batches per optimizer step

	LR          float64 `json:"lr"`
	MinLR       float64 `json:"min_lr"`
	Warmup      int     `json:"warmup"` // optimizer steps; -1 means none
	Schedule    string  `json:"schedule"`
	WeightDecay float64 `json:"weight_decay"`
	MaxGradNorm float64 `json:"max_grad_norm"` // 0 disables clipping

	DevFrac  float64 `json:"dev_frac"`
	TestFrac float64 `json:"test_frac"`
	// Patience stops training after this many epochs without a better dev
	// loss; 0 never stops early.
	Patience int   `json:"patience"`
	Seed     int64 `json:"seed"`
	// CheckpointEvery also checkpoints every N optimizer steps (epoch ends
	// always checkpoint); 0 only at epoch ends.
	CheckpointEvery int `json:"checkpoint_every"`
	// GenEval generates completions for up to this many test examples
	// (JSONL only) and scores them with BLEU and ROUGE-L; 0 skips it.
	GenEval      int `json:"gen_eval"`
	GenMaxTokens int `json:"gen_max_tokens"`
}

// WithDefaults fills zero fields.
func (o Options) WithDefaults() Options {
	if o.Epochs == 0 {
		o.Epochs = DefaultEpochs
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.SeqLen == 0 {
		o.SeqLen = DefaultSeqLen
	}
	if o.Accum == 0 {
		o.Accum = 1
	}
	if o.LR == 0 {
		o.LR = DefaultLRPretrain
		if o.InitConfig != nil {
			o.LR = DefaultLRScratch
		}
	}
	if o.MinLR == 0 {
		o.MinLR = o.LR / 10
	}
	if o.Schedule == "" {
		o.Schedule = ScheduleCosine
	}
	if o.WeightDecay == 0 {
		o.WeightDecay = DefaultWeightDecay
	}
	if o.MaxGradNorm == 0 {
		o.MaxGradNorm = DefaultMaxGradNorm
	}
	if o.DevFrac == 0 {
		o.DevFrac = DefaultDevFrac
	}
	if o.TestFrac == 0 {
		o.TestFrac = DefaultTestFrac
	}
	if o.GenMaxTokens == 0 {
		o.GenMaxTokens = DefaultGenMaxTokens
	}
	return o
}

// initConfigError names the init_config field each line of err, a
// model.Config error ("config: n_layer = 0, want 1..48"), is about:
// "init_config.n_layer: 0, want 1..48".
func initConfigError(err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimPrefix(l, "config: ")
		if name, rest, ok := strings.Cut(l, " = "); ok && !strings.Contains(name, " ") {
			lines = append(lines, "init_config."+name+": "+rest)
		} else {
			lines = append(lines, "init_config: "+l)
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

// Validate checks filled-in options; errors name the field.
func (o Options) Validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	switch {
	case o.BaseModel == "" && o.InitConfig == nil:
		bad("model", "required: a base model directory or an init config")
	case o.BaseModel != "" && o.InitConfig != nil:
		bad("model", "give a base model or an init config, not both")
	}
	if o.InitConfig != nil {
		if err := o.InitConfig.Validate(); err != nil {
			errs = append(errs, initConfigError(err))
		}
	}
	if o.Data == "" {
		bad("data", "required")
	}
	if o.Format != "" && o.Format != FormatText && o.Format != FormatJSONL {
		bad("format", "%q, want %q or %q", o.Format, FormatText, FormatJSONL)
	}
	if o.Epochs < 1 || o.Epochs > MaxEpochs {
		bad("epochs", "%d, want 1..%d", o.Epochs, MaxEpochs)
	}
	if o.BatchSize < 1 || o.BatchSize > MaxBatchSize {
		bad("batch_size", "%d, want 1..%d", o.BatchSize, MaxBatchSize)
	}
	if o.SeqLen < 2 || o.SeqLen > MaxSeqLen {
		bad("seq_len", "%d, want 2..%d", o.SeqLen, MaxSeqLen)
	}
	if o.Accum < 1 || o.Accum > MaxAccum {
		bad("accum", "%d, want 1..%d", o.Accum, MaxAccum)
	}
	if !finite(o.LR) || o.LR <= 0 || o.LR > 1 {
		bad("lr", "%g, want (0, 1]", o.LR)
	}
	if !finite(o.MinLR) || o.MinLR < 0 || o.MinLR > o.LR {
		bad("min_lr", "%g, want [0, lr]", o.MinLR)
	}
	if o.Warmup < -1 || o.Warmup > MaxTotalSteps {
		bad("warmup", "%d, want -1 (none), 0 (auto) or a step count", o.Warmup)
	}
	if o.Schedule != ScheduleCosine && o.Schedule != ScheduleConstant {
		bad("schedule", "%q, want %q or %q", o.Schedule, ScheduleCosine, ScheduleConstant)
	}
	if !finite(o.WeightDecay) || o.WeightDecay < 0 || o.WeightDecay >= 1 {
		bad("weight_decay", "%g, want [0, 1)", o.WeightDecay)
	}
	if !finite(o.MaxGradNorm) || o.MaxGradNorm < 0 {
		bad("max_grad_norm", "%g, want >= 0", o.MaxGradNorm)
	}
	switch {
	case !finite(o.DevFrac) || o.DevFrac < 0 || o.DevFrac >= 1:
		bad("dev_frac", "%g, want [0, 1)", o.DevFrac)
	case !finite(o.TestFrac) || o.TestFrac < 0 || o.TestFrac >= 1:
		bad("test_frac", "%g, want [0, 1)", o.TestFrac)
	case o.DevFrac+o.TestFrac >= 1:
		bad("dev_frac", "dev %g + test_frac %g must lie in [0, 1)", o.DevFrac, o.TestFrac)
	}
	if o.Patience < 0 || o.Patience > MaxEpochs {
		bad("patience", "%d, want 0..%d", o.Patience, MaxEpochs)
	}
	if o.CheckpointEvery < 0 {
		bad("checkpoint_every", "%d, want >= 0", o.CheckpointEvery)
	}
	if o.GenEval < 0 || o.GenEval > MaxGenEval {
		bad("gen_eval", "%d, want 0..%d", o.GenEval, MaxGenEval)
	}
	if o.GenMaxTokens < 1 || o.GenMaxTokens > 1024 {
		bad("gen_max_tokens", "%d, want 1..1024", o.GenMaxTokens)
	}
	return errors.Join(errs...)
}

// runKey identifies a run by what determines its weights: a checkpoint
// resumes only the run that wrote it.
func (o Options) runKey(datasetDigest string) string {
	// Settings that do not change the weights may differ between the run
	// and its resume.
	o.CheckpointEvery, o.GenEval, o.GenMaxTokens = 0, 0, 0
	b, _ := json.Marshal(struct {
		Options
		Dataset string `json:"dataset"`
	}{o, datasetDigest})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
