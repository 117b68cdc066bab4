package loop

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Limits on instructions.
const (
	// MaxInstructionsBytes bounds a session's instruction text.
	MaxInstructionsBytes = 2 << 10
	// MaxInstructionWords bounds the value of a free-text key (tone, style).
	MaxInstructionWords = 80
	// MaxLengthTokens bounds "length: N"; the interactive job kind's own
	// max_tokens limit applies as well.
	MaxLengthTokens = 1024
)

// Named lengths and creativity levels, in tokens and sampling temperature.
var (
	namedLengths    = map[string]int{"short": 32, "medium": 96, "long": 256}
	namedCreativity = map[string]float32{"low": 0.3, "medium": 0.7, "high": 1.0}
)

// Instructions are a session's standing instructions turned into what
// generation uses: sampling parameters (zero when not set) and a prefix
// written before the conversation.
type Instructions struct {
	MaxTokens   int      `json:"max_tokens,omitempty"`
	Temperature *float32 `json:"temperature,omitempty"`
	Prefix      string   `json:"prefix,omitempty"`
}

// ParseInstructions reads a person's instructions. The grammar:
//
//	instructions = entry { ( newline | ";" ) entry }
//	entry        = "" | "#" comment | key ":" value     (blank entries and comments are skipped)
//	key          = "length" | "creativity" | "style" | "tone"   (case-insensitive, each at most once)
//	length       = "short" | "medium" | "long" | N      -> max_tokens 32, 96, 256, or N in 1..1024
//	creativity   = "low" | "medium" | "high" | X        -> temperature 0.3, 0.7, 1.0, or X in [0, 2]
//	style, tone  = 1..80 bytes of letters, digits, spaces and - , ' .
//	                                                   -> prefix lines "Style: <value>." and "Tone: <value>."
//
// For example "length: short; tone: formal" gives max_tokens 32 and the
// prefix "Tone: formal.\n". The prefix lists style before tone whatever the
// order written. Errors name the entry (1-based) and the key.
func ParseInstructions(text string) (Instructions, error) {
	var ins Instructions
	if len(text) > MaxInstructionsBytes {
		return ins, fmt.Errorf("instructions: %d bytes, at most %d", len(text), MaxInstructionsBytes)
	}
	seen := map[string]bool{}
	var style, tone string
	entries := strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ';' })
	for i, raw := range entries {
		entry := strings.TrimSpace(raw)
		if entry == "" || strings.HasPrefix(entry, "#") {
			continue
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("instructions: entry %d (%q): %s", i+1, entry, fmt.Sprintf(format, a...))
		}
		k, v, ok := strings.Cut(entry, ":")
		if !ok {
			return ins, bad("want key: value (keys: length, creativity, style, tone)")
		}
		key, val := strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if seen[key] {
			return ins, bad("%s: given twice", key)
		}
		seen[key] = true
		switch key {
		case "length":
			n, ok := namedLengths[strings.ToLower(val)]
			if !ok {
				var err error
				if n, err = strconv.Atoi(val); err != nil || n < 1 || n > MaxLengthTokens {
					return ins, bad("length: want short, medium, long or a token count in 1..%d", MaxLengthTokens)
				}
			}
			ins.MaxTokens = n
		case "creativity":
			t, ok := namedCreativity[strings.ToLower(val)]
			if !ok {
				f, err := strconv.ParseFloat(val, 32)
				if err != nil || !(f >= 0 && f <= 2) {
					return ins, bad("creativity: want low, medium, high or a temperature in [0, 2]")
				}
				t = float32(f)
			}
			ins.Temperature = &t
		case "style", "tone":
			if err := checkWords(val); err != nil {
				return ins, bad("%s: %v", key, err)
			}
			if key == "style" {
				style = val
			} else {
				tone = val
			}
		default:
			return ins, bad("unknown key %q (keys: length, creativity, style, tone)", key)
		}
	}
	if style != "" {
		ins.Prefix += "Style: " + strings.TrimSuffix(style, ".") + ".\n"
	}
	if tone != "" {
		ins.Prefix += "Tone: " + strings.TrimSuffix(tone, ".") + ".\n"
	}
	return ins, nil
}

// checkWords accepts a short free-text value: letters, digits, spaces and
// a little punctuation, so that a value can never open a new turn or line in
// the prompt.
func checkWords(v string) error {
	if v == "" || len(v) > MaxInstructionWords {
		return fmt.Errorf("want 1..%d bytes", MaxInstructionWords)
	}
	for _, r := range v {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r):
		case r == ' ', r == '-', r == ',', r == '\'', r == '.':
		default:
			return fmt.Errorf("character %q not allowed (letters, digits, spaces and - , ' .)", r)
		}
	}
	return nil
}

// Labels of the transcript a session's prompt is written as.
const (
	UserLabel  = "User:"
	ReplyLabel = "Assistant:"
	// TurnStop ends a reply where the model starts writing the person's
	// next turn; session generations add it to their stop sequences.
	TurnStop = "\n" + UserLabel
)

// Transcript writes the prompt of a session turn: the instructions' prefix,
// each earlier turn as a "User:" line and an "Assistant:" line, then the new
// prompt and an open "Assistant:" for the model to continue. Replies are
// written as generated (they usually begin with a space).
func Transcript(prefix string, history []Turn, prompt string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, t := range history {
		b.WriteString(UserLabel + " " + t.Prompt + "\n" + ReplyLabel + t.Reply + "\n")
	}
	b.WriteString(UserLabel + " " + prompt + "\n" + ReplyLabel)
	return b.String()
}
