package generation

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/model"
)

// InputLine is a request line as read: either parsed or refused.
type InputLine struct {
	LineNo  int
	Request RequestLine
	Err     *LineError
}

// ReadRequestLines reads an OpenAI Batch JSONL stream. Every line yields an
// InputLine, good or bad, so one bad line never hides the others. Blank lines
// are skipped. Lines longer than MaxLineBytes are refused without being held
// in memory. maxLines (0 = no limit) bounds how many lines are accepted.
func ReadRequestLines(r io.Reader, maxLines int) ([]InputLine, error) {
	var out []InputLine
	err := EachRequestLine(r, maxLines, func(il InputLine) error {
		out = append(out, il)
		return nil
	})
	return out, err
}

// EachRequestLine is ReadRequestLines without keeping the lines: fn sees
// each one as it is read, so a large file is checked in bounded memory (the
// custom_ids seen are all it keeps). An error from fn stops the reading and
// is returned.
func EachRequestLine(r io.Reader, maxLines int, fn func(InputLine) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	seen := map[string]int{}
	n := 0
	for lineNo := 1; ; lineNo++ {
		raw, tooLong, err := ReadBoundedLine(br, MaxLineBytes)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
		var il *InputLine
		if tooLong {
			il = &InputLine{LineNo: lineNo, Err: &LineError{Code: "line_too_long", Message: fmt.Sprintf("line exceeds %d bytes", MaxLineBytes), Line: lineNo}}
		} else if len(TrimLineSpace(raw)) > 0 {
			if maxLines > 0 && n >= maxLines {
				return fmt.Errorf("line %d: more than %d request lines", lineNo, maxLines)
			}
			req, perr := ParseRequestLine(raw, lineNo)
			il = &InputLine{LineNo: lineNo, Request: req}
			if perr != nil {
				il.Err = perr.(*LineError)
			} else if first, dup := seen[req.CustomID]; dup {
				il.Err = &LineError{Code: "duplicate_custom_id", Message: fmt.Sprintf("custom_id %q already used on line %d", req.CustomID, first), Line: lineNo}
			} else {
				seen[req.CustomID] = lineNo
			}
		}
		if il != nil {
			n++
			if ferr := fn(*il); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// ReadBoundedLine returns one line without its newline. When the line is
// longer than limit it is consumed and dropped, and tooLong is set, so an
// oversized line is reported without ever being held in memory.
func ReadBoundedLine(br *bufio.Reader, limit int) (line []byte, tooLong bool, err error) {
	for {
		chunk, isPrefix, rerr := br.ReadLine()
		if !tooLong {
			if len(line)+len(chunk) > limit {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if rerr != nil {
			if len(line) > 0 || tooLong {
				return line, tooLong, nil
			}
			return nil, false, rerr
		}
		if !isPrefix {
			return line, tooLong, nil
		}
	}
}

// TrimLineSpace trims the spaces, tabs and carriage returns around a line
// of a JSONL file.
func TrimLineSpace(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	for j > i && (b[j-1] == ' ' || b[j-1] == '\t' || b[j-1] == '\r') {
		j--
	}
	return b[i:j]
}

// GenerateLines runs the good lines through the model's engine as batch
// rows of group (a batch id: groups take turns for the engine's slots),
// holding at most batchSize slots at once, and returns one ResponseLine per
// input line, in input order. The result ids derive from group and the line
// (LineID). Embeddings lines (EmbeddingsURL) are embedded on the model
// instead (LoadedModel.Embeddings), one after the other, before the
// completions start. progress, if set, is called with the number of lines
// finished.
func GenerateLines(ctx context.Context, lm *LoadedModel, tok *model.Tokenizer, lines []InputLine, batchSize int, group string, progress func(done int)) ([]ResponseLine, error) {
	out := make([]ResponseLine, len(lines))
	var idx []int
	var reqs []model.Request
	done := 0
	maxPrompt := lm.Model.Config.NPositions - 1
	for i, il := range lines {
		if il.Err != nil {
			out[i] = errorLine(group, il, il.Err)
			done++
			continue
		}
		if body := il.Request.Embeddings; body != nil {
			line, err := embedLine(ctx, lm, tok, group, il, *body)
			if err != nil {
				return nil, err
			}
			out[i] = line
			done++
			continue
		}
		params, _ := il.Request.Body.Params() // checked when parsed
		prompt := tok.Encode(linePrompt(lm, il.Request, &params))
		if len(prompt) > maxPrompt {
			out[i] = errorLine(group, il, &LineError{Code: "context_length_exceeded", Message: fmt.Sprintf("body.prompt: %d tokens; the model's context allows %d prompt tokens", len(prompt), maxPrompt), Line: il.LineNo})
			done++
			continue
		}
		idx = append(idx, i)
		reqs = append(reqs, model.Request{Prompt: prompt, Params: params})
	}
	if progress != nil && done > 0 {
		progress(done)
	}
	if len(reqs) == 0 {
		return out, nil
	}
	comps, err := lm.Engine.Generate(ctx, reqs, Options{Class: Batch, Group: group, MaxSlots: batchSize, OnDone: func(int) {
		if done++; progress != nil {
			progress(done)
		}
	}})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for _, i := range idx {
			out[i] = errorLine(group, lines[i], &LineError{Code: "generation_failed", Message: err.Error(), Line: lines[i].LineNo})
		}
		return out, nil
	}
	for k, i := range idx {
		out[i] = okLine(group, lines[i], lm.Name, tok, comps[k])
	}
	return out, nil
}

// embedLine answers an embeddings line (EmbeddingsURL) on the model: the
// OpenAI embeddings body, or an error line naming the body field the model
// refused. Only a cancelled ctx makes it fail.
func embedLine(ctx context.Context, lm *LoadedModel, tok *model.Tokenizer, group string, il InputLine, body EmbeddingsBody) (ResponseLine, error) {
	resp, err := lm.Embeddings(ctx, tok, body)
	var re *RequestError
	switch {
	case ctx.Err() != nil:
		return ResponseLine{}, ctx.Err()
	case errors.As(err, &re):
		return errorLine(group, il, &LineError{Code: re.Code, Message: "body." + re.Error(), Line: il.LineNo}), nil
	case err != nil:
		return errorLine(group, il, &LineError{Code: "embedding_failed", Message: err.Error(), Line: il.LineNo}), nil
	}
	return ResponseLine{ID: LineID(LineIDPrefix, group, il.LineNo, il.Request.CustomID), CustomID: il.Request.CustomID,
		Response: &Response{StatusCode: 200, RequestID: LineID(RequestIDPrefix, group, il.LineNo, il.Request.CustomID), Embeddings: &resp}}, nil
}

// LineID is the id of one line's result: stable for a given group (a
// batch id), input line and custom_id, so a chunk that is generated again
// after a crash writes the same ids, and different for every group, so two
// batches given the same line never share an id.
func LineID(prefix, group string, line int, customID string) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%s", group, line, customID)))
	return prefix + hex.EncodeToString(h[:12])
}

// Prefixes of the ids of a result line (ResponseLine.ID), of its request
// (Response.RequestID) and of its completion (CompletionResponse.ID), as
// OpenAI's batch output names them.
const (
	LineIDPrefix       = "batch_req_"
	RequestIDPrefix    = "req-"
	CompletionIDPrefix = "cmpl-"
)

func errorLine(group string, il InputLine, e *LineError) ResponseLine {
	return ResponseLine{ID: LineID(LineIDPrefix, group, il.LineNo, il.Request.CustomID), CustomID: il.Request.CustomID, Error: e}
}

func okLine(group string, il InputLine, modelName string, tok *model.Tokenizer, comps []model.Completion) ResponseLine {
	if il.Request.Chat != nil {
		body := chatResponse(LineID("chatcmpl-", group, il.LineNo, il.Request.CustomID), modelName, il.Request.Chat, tok, comps)
		return ResponseLine{ID: LineID(LineIDPrefix, group, il.LineNo, il.Request.CustomID), CustomID: il.Request.CustomID,
			Response: &Response{StatusCode: 200, RequestID: LineID(RequestIDPrefix, group, il.LineNo, il.Request.CustomID), Chat: body}}
	}
	body := CompletionResponse{
		ID:      LineID(CompletionIDPrefix, group, il.LineNo, il.Request.CustomID),
		Object:  "text_completion",
		Created: time.Now().Unix(),
		Model:   modelName,
	}
	for i, c := range comps {
		ch := Choice{Index: i, Text: c.Text, FinishReason: c.FinishReason}
		if lp := choiceLogprobs(tok, c); lp != nil {
			ch.Logprobs = lp
		}
		body.Choices = append(body.Choices, ch)
		body.Usage.CompletionTokens += c.CompletionTokens
		body.Usage.PromptTokens = c.PromptTokens
	}
	body.Usage.TotalTokens = body.Usage.PromptTokens + body.Usage.CompletionTokens
	return ResponseLine{ID: LineID(LineIDPrefix, group, il.LineNo, il.Request.CustomID), CustomID: il.Request.CustomID,
		Response: &Response{StatusCode: 200, RequestID: LineID(RequestIDPrefix, group, il.LineNo, il.Request.CustomID), Body: body}}
}

// WriteJSONLAtomic writes lines to the path field names, inside root,
// through a temp file in the same directory and a rename (Root.WriteFile),
// so readers see the old file or the whole new one.
func WriteJSONLAtomic(root *dataroot.Root, field, path string, lines []ResponseLine) error {
	return root.WriteFile(field, path, func(f io.Writer) error {
		w := bufio.NewWriter(f)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, l := range lines {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return w.Flush()
	})
}

func choiceLogprobs(tok *model.Tokenizer, c model.Completion) *ChoiceLogprobs {
	if len(c.Logprobs) == 0 {
		return nil
	}
	lp := &ChoiceLogprobs{}
	for _, t := range c.Logprobs {
		lp.Append(NewLogprobEntry(tok, t))
	}
	return lp
}
