package batch

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/limits"
)

// Post-processing limits.
const (
	MaxPostStops    = limits.PostStops
	MaxPostStopLen  = limits.PostStopLen
	MaxPostMaxChars = limits.PostMaxChars
)

// PostProcess is applied by the worker to every generated text of a batch,
// in this order: strip the prompt, cut at the first stop sequence, trim
// white space, cap the length (and trim again, when trimming, so a cut never
// leaves trailing space). Token usage still counts what the model generated.
type PostProcess struct {
	// StripPrompt removes the prompt when the text starts with it (models
	// that echo their input).
	StripPrompt bool `json:"strip_prompt,omitempty"`
	// Stop cuts the text before the first occurrence of any of these.
	Stop []string `json:"stop,omitempty"`
	// Trim removes leading and trailing white space.
	Trim bool `json:"trim,omitempty"`
	// MaxChars caps the text at this many characters (0: no cap).
	MaxChars int `json:"max_chars,omitempty"`
}

// Validate checks the limits.
func (p PostProcess) Validate() error {
	if len(p.Stop) > MaxPostStops {
		return fmt.Errorf("postprocess.stop: %d sequences, at most %d", len(p.Stop), MaxPostStops)
	}
	for i, s := range p.Stop {
		if s == "" || len(s) > MaxPostStopLen {
			return fmt.Errorf("postprocess.stop[%d]: must be 1..%d bytes", i, MaxPostStopLen)
		}
	}
	if p.MaxChars < 0 || p.MaxChars > MaxPostMaxChars {
		return fmt.Errorf("postprocess.max_chars: %d is outside 0..%d", p.MaxChars, MaxPostMaxChars)
	}
	return nil
}

// IsZero reports whether p changes nothing.
func (p PostProcess) IsZero() bool {
	return !p.StripPrompt && len(p.Stop) == 0 && !p.Trim && p.MaxChars == 0
}

// Apply post-processes one generated text.
func (p PostProcess) Apply(prompt, text string) string {
	if p.StripPrompt && prompt != "" {
		text = strings.TrimPrefix(text, prompt)
	}
	if len(p.Stop) > 0 {
		cut := len(text)
		for _, s := range p.Stop {
			if i := strings.Index(text, s); i >= 0 && i < cut {
				cut = i
			}
		}
		text = text[:cut]
	}
	if p.Trim {
		text = strings.TrimSpace(text)
	}
	if p.MaxChars > 0 && utf8.RuneCountInString(text) > p.MaxChars {
		n := 0
		for i := range text {
			if n == p.MaxChars {
				text = text[:i]
				break
			}
			n++
		}
		if p.Trim {
			text = strings.TrimSpace(text)
		}
	}
	return text
}
