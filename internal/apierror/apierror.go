// Package apierror writes the error body of every non-2xx answer under
// /v1, in OpenAI's shape, so that an OpenAI client library reads it as an
// API error:
//
//	{"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": "invalid_request"}}
//
// The type follows the status as OpenAI's does (Type); param names the
// request field at fault, or is null; code is Tandem's own, stable code.
// The token guard (package auth) and the producer's handlers both write
// through it, so the shape is the same for a 401 and for a 404.
package apierror

import (
	"encoding/json"
	"net/http"
)

// Body is the error body of a non-2xx answer.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is what Body says of the error.
type Detail struct {
	Message string `json:"message"`
	// Type is OpenAI's error type for the status (Type).
	Type string `json:"type"`
	// Param is the request field at fault; null when none is.
	Param *string `json:"param"`
	// Code is Tandem's code for the error (not_found, invalid_request...).
	Code string `json:"code"`
}

// OpenAI's error types.
const (
	TypeInvalidRequest     = "invalid_request_error"
	TypeAuthentication     = "authentication_error"
	TypePermission         = "permission_error"
	TypeRateLimit          = "rate_limit_error"
	TypeServer             = "server_error"
	TypeServiceUnavailable = "service_unavailable"
)

// Type is OpenAI's error type for an answer with status: 401
// authentication_error, 403 permission_error, 429 rate_limit_error, 503
// service_unavailable, any other 5xx server_error, and every other status
// (400, 404, 405, 408, 409, 413, 422...) invalid_request_error.
func Type(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return TypeAuthentication
	case status == http.StatusForbidden:
		return TypePermission
	case status == http.StatusTooManyRequests:
		return TypeRateLimit
	case status == http.StatusServiceUnavailable:
		return TypeServiceUnavailable
	case status >= 500:
		return TypeServer
	}
	return TypeInvalidRequest
}

// New is the body of an answer with status; param "" is null.
func New(status int, code, param, msg string) Body {
	b := Body{Error: Detail{Message: msg, Type: Type(status), Code: code}}
	if param != "" {
		b.Error.Param = &param
	}
	return b
}

// Write answers status with New's body as JSON.
func Write(w http.ResponseWriter, status int, code, param, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(New(status, code, param, msg))
}
