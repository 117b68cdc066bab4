package finetune

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
)

// Limits on a dataset file. They are checked before any training starts so
// that a wrong file fails in a second with the line named, not an hour in.
const (
	// MaxDatasetBytes bounds the whole file.
	MaxDatasetBytes = limits.DatasetBytes
	// MaxLineBytes bounds one line (one text example or one JSONL record).
	MaxLineBytes = limits.DatasetLineBytes
	// MaxExamples bounds the number of examples.
	MaxExamples = limits.DatasetExamples
)

// Dataset formats.
const (
	FormatText  = "text"  // one example per non-blank line; every token counts in the loss
	FormatJSONL = "jsonl" // {"prompt","completion"} per line; only completion tokens count
)

// ErrBadDataset wraps every dataset validation failure.
var ErrBadDataset = errors.New("bad dataset")

// Example is one tokenized training example. Tokens[i] is predicted from
// Tokens[:i] and counts in the loss when Loss[i] is true.
type Example struct {
	Tokens []int32
	Loss   []bool
	// Prompt and Completion keep the text of JSONL examples, for the
	// generation metrics (BLEU, ROUGE-L) on the test split.
	Prompt, Completion string
}

// Dataset is a checked, tokenized dataset file.
type Dataset struct {
	Path     string
	Format   string
	Digest   string // sha256 of the file's bytes, hex
	Examples []Example
}

// DetectFormat picks the format from the file name: .jsonl and .json are
// JSONL, anything else plain text.
func DetectFormat(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".json", ".ndjson":
		return FormatJSONL
	}
	return FormatText
}

// LoadDataset reads, checks and tokenizes a dataset file. format "" means
// DetectFormat. Every error wraps ErrBadDataset and names the line.
func LoadDataset(path, format string, tok *model.Tokenizer) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDataset, err)
	}
	defer f.Close()
	return readDataset(f, path, format, tok)
}

// readDataset is LoadDataset's reading and checking of an open file; path
// names it in errors and in the Dataset.
func readDataset(f *os.File, path, format string, tok *model.Tokenizer) (*Dataset, error) {
	if format == "" {
		format = DetectFormat(path)
	}
	if format != FormatText && format != FormatJSONL {
		return nil, fmt.Errorf("%w: format %q, want %q or %q", ErrBadDataset, format, FormatText, FormatJSONL)
	}
	if st, err := f.Stat(); err == nil && st.Size() > MaxDatasetBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadDataset, path, MaxDatasetBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxDatasetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadDataset, path, err)
	}
	if len(data) > MaxDatasetBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadDataset, path, MaxDatasetBytes)
	}
	ds, err := ParseDataset(data, format, tok)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ds.Path = path
	return ds, nil
}

// ParseDataset checks and tokenizes dataset bytes.
func ParseDataset(data []byte, format string, tok *model.Tokenizer) (*Dataset, error) {
	sum := sha256.Sum256(data)
	ds := &Dataset{Format: format, Digest: hex.EncodeToString(sum[:])}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: empty (no examples)", ErrBadDataset)
	}
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) > MaxLineBytes {
			return nil, fmt.Errorf("%w: line %d is %d bytes, limit %d", ErrBadDataset, lineNo, len(line), MaxLineBytes)
		}
		if i := bytes.IndexByte(line, 0); i >= 0 {
			return nil, fmt.Errorf("%w: line %d has a NUL byte at column %d (binary file?)", ErrBadDataset, lineNo, i+1)
		}
		if !utf8.Valid(line) {
			return nil, fmt.Errorf("%w: line %d is not valid UTF-8 (binary file?)", ErrBadDataset, lineNo)
		}
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if len(ds.Examples) >= MaxExamples {
			return nil, fmt.Errorf("%w: more than %d examples", ErrBadDataset, MaxExamples)
		}
		var ex Example
		var err error
		if format == FormatJSONL {
			ex, err = jsonlExample(line, tok)
		} else {
			ex = textExample(string(line), tok)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrBadDataset, lineNo, err)
		}
		ds.Examples = append(ds.Examples, ex)
	}
	if len(ds.Examples) == 0 {
		return nil, fmt.Errorf("%w: empty (no examples)", ErrBadDataset)
	}
	return ds, nil
}

func textExample(line string, tok *model.Tokenizer) Example {
	ids := append(tok.Encode(line), tok.EOT())
	loss := make([]bool, len(ids))
	for i := range loss {
		loss[i] = true
	}
	return Example{Tokens: ids, Loss: loss}
}

// pair is one JSONL record.
type pair struct {
	Prompt     *string `json:"prompt"`
	Completion *string `json:"completion"`
}

func jsonlExample(line []byte, tok *model.Tokenizer) (Example, error) {
	var p pair
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Example{}, fmt.Errorf("want a JSON object {\"prompt\",\"completion\"}: %w", err)
	}
	if p.Completion == nil || strings.TrimSpace(*p.Completion) == "" {
		return Example{}, errors.New("completion: required and non-empty")
	}
	prompt := ""
	if p.Prompt != nil {
		prompt = *p.Prompt
	}
	pt := tok.Encode(prompt)
	ct := append(tok.Encode(*p.Completion), tok.EOT())
	ids := append(pt, ct...)
	loss := make([]bool, len(ids))
	for i := len(pt); i < len(ids); i++ {
		loss[i] = true
	}
	return Example{Tokens: ids, Loss: loss, Prompt: prompt, Completion: *p.Completion}, nil
}

// FileDigest is the sha256 of a file, hex.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
