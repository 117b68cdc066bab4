package batch

import (
	"fmt"
	"io"
	"slices"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/limits"
)

// Endpoints are the values a batch's endpoint may take, as the OpenAI Batch
// API names them; every request line's url must be the batch's endpoint.
var Endpoints = []string{generation.CompletionsURL, "/v1/chat/completions", "/v1/embeddings"}

// checkEndpoint refuses an endpoint outside Endpoints.
func checkEndpoint(e string) error {
	if !slices.Contains(Endpoints, e) {
		return fmt.Errorf("endpoint: %q: want one of %v", e, Endpoints)
	}
	return nil
}

// lineChecker applies the checks across the lines of one OpenAI Batch
// input: one endpoint (every url the same) and one model (every body.model
// the same). An empty endpoint or model is taken from the first line that
// names one.
type lineChecker struct {
	endpoint, model         string
	endpointLine, modelLine int // the line that set each; 0: the batch's own
}

// check returns the problem of il, or nil when it is a valid row.
func (c *lineChecker) check(il generation.InputLine) *Problem {
	if il.Err != nil {
		return &Problem{Line: il.LineNo, Code: il.Err.Code, Message: il.Err.Message, CustomID: il.Request.CustomID}
	}
	// same checks that got, a line's value of field, is the batch's what
	// (*want); the first line that names one sets it when the batch does not.
	same := func(field, what, got string, want *string, at *int) *Problem {
		var msg string
		switch {
		case got == "" || got == *want:
			return nil
		case *want == "":
			*want, *at = got, il.LineNo
			return nil
		case *at == 0:
			msg = fmt.Sprintf("%s: %q differs from the batch's %s %q", field, got, what, *want)
		default:
			msg = fmt.Sprintf("%s: %q differs from %q on line %d; a batch has one %s", field, got, *want, *at, what)
		}
		return &Problem{Line: il.LineNo, Code: what + "_mismatch", CustomID: il.Request.CustomID, Message: msg}
	}
	url := il.Request.URL
	if url == "" {
		url = generation.CompletionsURL
	}
	if p := same("url", "endpoint", url, &c.endpoint, &c.endpointLine); p != nil {
		return p
	}
	return same("body.model", "model", il.Request.Model(), &c.model, &c.modelLine)
}

// MaxFileRequests bounds the request lines of an uploaded batch file.
const MaxFileRequests = limits.BatchFileRequests

// maxFileRequests is MaxFileRequests, lowered by tests.
var maxFileRequests = MaxFileRequests

// CheckFile validates an OpenAI Batch input file as it streams by, holding
// only the custom_ids seen: every line must be a valid request line, and
// all lines must name one url and one model (lines without body.model take
// the batch's). The Report lists the problems by line; the error is one
// that stops reading (more than MaxFileRequests lines, more than MaxInputBytes, a
// read error).
func CheckFile(r io.Reader) (*Report, error) {
	lr := &limitReader{r: r, left: maxInputBytes}
	var (
		c   lineChecker
		rep Report
	)
	err := generation.EachRequestLine(lr, maxFileRequests, func(il generation.InputLine) error {
		rep.Lines++
		if p := c.check(il); p != nil {
			rep.Invalid++
			if len(rep.Problems) < MaxReportedProblems {
				rep.Problems = append(rep.Problems, *p)
			} else {
				rep.Unlisted++
			}
		}
		return nil
	})
	if lr.over {
		return nil, ErrInputTooLarge
	}
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	rep.Valid = rep.Lines - rep.Invalid
	return &rep, nil
}
