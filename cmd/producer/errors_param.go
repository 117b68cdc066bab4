package main

import "net/http"

// writeParamError answers an error about one request field, param (OpenAI's
// "param", such as messages[1].role), in OpenAI's error shape.
func writeParamError(w http.ResponseWriter, status int, code, param, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error", "param": param, "code": code}})
}
