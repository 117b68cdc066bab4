package generation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Inputs is OpenAI's form for one or more model inputs, which embeddings'
// "input" (EmbeddingInput) and completions' "prompt" (jobs.Prompts) take:
// a string, a list of strings, a list of token ids (one input) or a list
// of such lists. After decoding, Texts or Tokens holds the inputs, and it
// encodes back in the form it came in.
type Inputs struct {
	Texts  []string
	Tokens [][]int32
	// One is set for the forms that hold one input (a string, a list of
	// token ids): its errors then name the field ("input") rather than
	// its first item ("input[0]").
	One bool
}

// Len is the number of inputs.
func (in Inputs) Len() int { return len(in.Texts) + len(in.Tokens) }

// DecodeInputs decodes b, in one of Inputs' forms, as the request field
// named field, which holds at most max inputs (checked before the items
// are decoded). null and [] decode to no input. Its errors are
// *RequestError naming the item at fault ("prompt[2]").
func DecodeInputs(b []byte, field string, max int) (Inputs, error) {
	var in Inputs
	b = bytes.TrimSpace(b)
	want := "want a string, a list of strings, a list of token ids or a list of lists of token ids"
	switch {
	case len(b) == 0 || string(b) == "null":
		return in, nil // the caller says it is required
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return in, invalid(field, "%s", want)
		}
		in.Texts, in.One = []string{s}, true
		return in, nil
	case b[0] != '[':
		return in, invalid(field, "%s", want)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return in, invalid(field, "%s", want)
	}
	if len(items) == 0 {
		return in, nil
	}
	first := items[0][0]
	if (first == '"' || first == '[') && len(items) > max {
		return in, invalid(field, "%d %ss, at most %d", len(items), field, max)
	}
	switch first {
	case '"':
		in.Texts = make([]string, len(items))
		for i, it := range items {
			if err := json.Unmarshal(it, &in.Texts[i]); err != nil || it[0] != '"' {
				return Inputs{}, invalid(fmt.Sprintf("%s[%d]", field, i), "want a string, as %s[0] is", field)
			}
		}
	case '[':
		in.Tokens = make([][]int32, len(items))
		for i, it := range items {
			// A null among the ids would decode as token 0.
			if err := json.Unmarshal(it, &in.Tokens[i]); err != nil || it[0] != '[' || bytes.Contains(it, []byte("null")) {
				return Inputs{}, invalid(fmt.Sprintf("%s[%d]", field, i), "want a list of token ids (integers), as %s[0] is", field)
			}
		}
	default:
		one := make([]int32, len(items))
		for i, it := range items {
			if err := json.Unmarshal(it, &one[i]); err != nil || (it[0] != '-' && (it[0] < '0' || it[0] > '9')) {
				return Inputs{}, invalid(fmt.Sprintf("%s[%d]", field, i), "want a token id (an integer), as %s[0] is", field)
			}
		}
		in.Tokens, in.One = [][]int32{one}, true
	}
	return in, nil
}

// MarshalJSON implements json.Marshaler: the form the inputs came in.
func (in Inputs) MarshalJSON() ([]byte, error) {
	switch {
	case in.One && len(in.Texts) == 1:
		return json.Marshal(in.Texts[0])
	case in.One && len(in.Tokens) == 1:
		return json.Marshal(in.Tokens[0])
	case in.Texts != nil:
		return json.Marshal(in.Texts)
	case in.Tokens != nil:
		return json.Marshal(in.Tokens)
	}
	return []byte("[]"), nil
}

// Param names input i of field as a request's "param": field itself for
// the one-input forms, "field[i]" otherwise.
func (in Inputs) Param(field string, i int) string {
	if in.One {
		return field
	}
	return fmt.Sprintf("%s[%d]", field, i)
}

// TokenParam names token j of input i of field.
func (in Inputs) TokenParam(field string, i, j int) string {
	if in.One {
		return fmt.Sprintf("%s[%d]", field, j)
	}
	return fmt.Sprintf("%s[%d][%d]", field, i, j)
}

// Check refuses an empty input, a text that is not valid UTF-8 and a
// negative token id, with a *RequestError naming the input as field's.
func (in Inputs) Check(field string) error {
	for i, s := range in.Texts {
		switch {
		case s == "":
			return invalid(in.Param(field, i), "empty string")
		case !utf8.ValidString(s):
			return invalid(in.Param(field, i), "not valid UTF-8")
		}
	}
	for i, ids := range in.Tokens {
		if len(ids) == 0 {
			return invalid(in.Param(field, i), "empty list of token ids")
		}
		for j, t := range ids {
			if t < 0 {
				return invalid(in.TokenParam(field, i, j), "token id %d is negative", t)
			}
		}
	}
	return nil
}
