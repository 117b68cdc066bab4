package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/tandem-ai/tandem/generation"
)

// Every JSON body of the API is read by decodeBody: exactly one JSON
// object, no field the request type lacks, each field of its JSON type;
// each refusal names the field as OpenAI's param does, or the body.

// decodeStrict reads a body of at most limit bytes into v (decodeBody);
// when it is refused, it writes the answer and reports false.
func decodeStrict(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	if err := decodeBody(http.MaxBytesReader(w, r.Body, limit), v); err != nil {
		writeBodyError(w, err)
		return false
	}
	return true
}

// decodeBody decodes rd, which must hold exactly one JSON object, into v,
// refusing unknown fields. Its errors name the field at fault
// (carriedParam), or begin with "body: " when the body is not one JSON
// object; an error reading rd (over its limit, too slow) is returned as
// it is.
func decodeBody(rd io.Reader, v any) error {
	br := bufio.NewReader(rd)
	first, err := firstByte(br)
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("body: empty; send one JSON object")
	case err != nil:
		return err
	case first != '{':
		return fmt.Errorf("body: %s, not an object; send one JSON object", jsonKind(first))
	}
	dec := json.NewDecoder(br)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return afterValueError(err)
	}
	return nil
}

// firstByte reads past white space and returns the first other byte,
// which it leaves unread.
func firstByte(br *bufio.Reader) (byte, error) {
	for {
		c, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, br.UnreadByte()
		}
	}
}

// jsonKind names the JSON value that begins with c.
func jsonKind(c byte) string {
	switch {
	case c == '[':
		return "a JSON list"
	case c == '"':
		return "a JSON string"
	case c == 'n':
		return "JSON null"
	case c == 't' || c == 'f':
		return "a JSON boolean"
	case c == '-' || c >= '0' && c <= '9':
		return "a JSON number"
	}
	return "not JSON"
}

// decodeError rewrites an error of encoding/json so that it names the
// field as OpenAI's param does: a *fieldError for a value of the wrong
// type or an unknown field (inside a field that decodes itself, such as
// stream_options, the path runs through it), or for an error of a type's
// own UnmarshalJSON that begins with its field; "body: ..." for JSON that
// does not parse. Errors that carry their field already, and those of
// reading the body, are returned as they are.
func decodeError(err error) error {
	if isBodyError(err) || carriedParam(err) != "" || strings.HasPrefix(err.Error(), "body: ") {
		return err
	}
	msg := err.Error()
	// The field a type's own UnmarshalJSON put before a decoding error of
	// its inside ("stream_options: ...: json: unknown field ...").
	outer := ""
	if !strings.HasPrefix(msg, "json: ") {
		outer = leadingPath(msg)
	}
	if fe := jsonFieldError(outer, err); fe != nil {
		if fe.param == "" {
			return errors.New("body: " + fe.msg)
		}
		return fe
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("body: not valid JSON at byte %d: %w", se.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("body: the JSON ends before its object does")
	case outer != "":
		return &fieldError{outer, strings.TrimSpace(strings.TrimPrefix(msg[len(outer):], ":"))}
	}
	return fmt.Errorf("body: %w", err)
}

// jsonFieldError is err, an error of encoding/json decoding the value of
// field outer ("" for the body), as the field inside it that it is
// about: a value of the wrong type, or an unknown field; nil for any
// other error.
func jsonFieldError(outer string, err error) *fieldError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &fieldError{joinPath(outer, te.Field), fmt.Sprintf("want %s, got JSON %s", jsonWant(te.Type), te.Value)}
	}
	if _, rest, ok := strings.Cut(err.Error(), `json: unknown field "`); ok {
		name, _, _ := strings.Cut(rest, `"`)
		return &fieldError{joinPath(outer, name), msgUnknownField}
	}
	return nil
}

// msgUnknownField is the message of a field a body may not have.
const msgUnknownField = "unknown field; this route does not take it"

// joinPath is inner's path inside outer ("" for the body itself).
func joinPath(outer, inner string) string {
	switch {
	case outer == "":
		return inner
	case inner == "":
		return outer
	}
	return outer + "." + inner
}

// jsonWant says in JSON's words what a Go type takes.
func jsonWant(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "another JSON type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another JSON type"
}

// bodyErrorCode is the error code of a body refused by decodeBody:
// invalid_request for a value the request type refused, invalid_json for
// JSON of the wrong shape.
func bodyErrorCode(err error) string {
	var ce *generation.ChatFieldError
	var re *generation.RequestError
	if errors.As(err, &ce) || errors.As(err, &re) {
		return "invalid_request"
	}
	return "invalid_json"
}
