package finetune

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/tandem-ai/tandem/atomicfile"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
)

// CheckpointFile is the checkpoint's name inside a run directory.
const CheckpointFile = "checkpoint.bin"

// checkpointMagic starts every checkpoint file; the version follows it.
const (
	checkpointMagic   = "TNDMCKPT"
	checkpointVersion = 1
	// maxHeaderBytes bounds the JSON header (the loss history lives there).
	maxHeaderBytes = limits.CheckpointHeaderBytes
)

// EpochStats are one epoch's numbers.
type EpochStats struct {
	Epoch     int     `json:"epoch"`
	Step      int     `json:"step"` // optimizer steps at the end of the epoch
	TrainLoss float64 `json:"train_loss"`
	DevLoss   float64 `json:"dev_loss"`
	DevPPL    float64 `json:"dev_ppl"`
}

// State is where a run stands: everything besides the tensors that a resume
// needs to continue exactly as if it had never stopped.
type State struct {
	// RunKey identifies the run's inputs (hyper-parameters and dataset
	// digest); a checkpoint of another run is refused, not resumed.
	RunKey string       `json:"run_key"`
	Config model.Config `json:"config"`
	// Epoch is the epoch in progress (0-based); StepInEpoch the optimizer
	// steps already taken in it, i.e. the data position.
	Epoch       int `json:"epoch"`
	StepInEpoch int `json:"step_in_epoch"`
	// RNG is the shuffle generator's state at the start of Epoch (PCG,
	// binary form); the epoch's order is drawn from it again on resume.
	RNG []byte `json:"rng"`
	// EpochTrainLoss sums the step losses of the epoch so far.
	EpochTrainLoss float64 `json:"epoch_train_loss"`
	EpochSteps     int     `json:"epoch_steps"`

	InitialDevLoss float64      `json:"initial_dev_loss"`
	BestDevLoss    float64      `json:"best_dev_loss"`
	BestEpoch      int          `json:"best_epoch"`
	BadEpochs      int          `json:"bad_epochs"`
	StepLosses     []float32    `json:"step_losses"`
	Epochs         []EpochStats `json:"epochs"`
	Done           bool         `json:"done"`
}

// Checkpoint is a State with the model's parameters and the optimizer's
// moments and step count.
type Checkpoint struct {
	State  State
	Params []float32
	Opt    model.AdamWState
}

// SaveCheckpoint writes c to path through a temporary file in the same
// directory, synced and renamed over path: a crash leaves the old
// checkpoint or the new one, never a torn file. A CRC32 of the content
// ends the file and is checked on load.
func SaveCheckpoint(path string, c *Checkpoint) error {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer root.Close()
	return saveCheckpoint(root, filepath.Base(path), c)
}

// saveCheckpoint is SaveCheckpoint for a name inside root.
func saveCheckpoint(root *os.Root, name string, c *Checkpoint) error {
	n := len(c.Params)
	if len(c.Opt.M) != n || len(c.Opt.V) != n {
		return fmt.Errorf("checkpoint: %d params but %d/%d moments", n, len(c.Opt.M), len(c.Opt.V))
	}
	hdr, err := json.Marshal(struct {
		State
		OptStep int `json:"opt_step"`
	}{c.State, c.Opt.Step})
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	err = atomicfile.WriteIn(root, name, func(f io.Writer) error {
		crc := crc32.NewIEEE()
		w := bufio.NewWriterSize(io.MultiWriter(f, crc), 1<<20)
		le := binary.LittleEndian
		if _, err := w.WriteString(checkpointMagic); err != nil {
			return err
		}
		for _, v := range []any{uint32(checkpointVersion), uint64(len(hdr))} {
			if err := binary.Write(w, le, v); err != nil {
				return err
			}
		}
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		if err := binary.Write(w, le, uint64(n)); err != nil {
			return err
		}
		for _, s := range [][]float32{c.Params, c.Opt.M, c.Opt.V} {
			if err := binary.Write(w, le, s); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		return binary.Write(f, le, crc.Sum32())
	})
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// ErrNoCheckpoint is returned by LoadCheckpoint when there is none.
var ErrNoCheckpoint = errors.New("no checkpoint")

// LoadCheckpoint reads a checkpoint written by SaveCheckpoint. A missing
// file is ErrNoCheckpoint; a damaged one is an error naming the problem.
func LoadCheckpoint(path string) (*Checkpoint, error) { return loadCheckpoint(os.Open, path, path) }

// loadCheckpoint reads the checkpoint open(name) opens; path names it in
// errors.
func loadCheckpoint(open func(string) (*os.File, error), name, path string) (*Checkpoint, error) {
	f, err := open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoCheckpoint
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	size := fi.Size()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("checkpoint %s: "+format, append([]any{path}, args...)...)
	}
	if size < int64(len(checkpointMagic))+4+8+8+4 {
		return nil, bad("truncated (%d bytes)", size)
	}
	crc := crc32.NewIEEE()
	r := bufio.NewReaderSize(io.TeeReader(io.LimitReader(f, size-4), crc), 1<<20)
	le := binary.LittleEndian
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != checkpointMagic {
		return nil, bad("not a checkpoint file")
	}
	var version uint32
	var hlen uint64
	if err := binary.Read(r, le, &version); err != nil {
		return nil, bad("%v", err)
	}
	if version != checkpointVersion {
		return nil, bad("version %d, this build reads %d", version, checkpointVersion)
	}
	if err := binary.Read(r, le, &hlen); err != nil {
		return nil, bad("%v", err)
	}
	if hlen > maxHeaderBytes || int64(hlen) > size {
		return nil, bad("header of %d bytes", hlen)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, bad("header: %v", err)
	}
	var h struct {
		State
		OptStep int `json:"opt_step"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil {
		return nil, bad("header: %v", err)
	}
	var n uint64
	if err := binary.Read(r, le, &n); err != nil {
		return nil, bad("%v", err)
	}
	if want := int64(len(checkpointMagic)) + 4 + 8 + int64(hlen) + 8 + int64(n)*12 + 4; n > model.MaxParams || want != size {
		return nil, bad("%d parameters do not match the file size %d", n, size)
	}
	c := &Checkpoint{State: h.State, Params: make([]float32, n), Opt: model.AdamWState{M: make([]float32, n), V: make([]float32, n), Step: h.OptStep}}
	for _, s := range [][]float32{c.Params, c.Opt.M, c.Opt.V} {
		if err := binary.Read(r, le, s); err != nil {
			return nil, bad("tensors: %v", err)
		}
	}
	var stored uint32
	if err := binary.Read(f, le, &stored); err != nil {
		return nil, bad("checksum: %v", err)
	}
	if stored != crc.Sum32() {
		return nil, bad("checksum mismatch (damaged file)")
	}
	return c, nil
}
