package main

import "net/http"

// writeParamError is writeError for an error about one request field,
// param (OpenAI's "param"), which msg names too. Until the error object
// carries param (the oai-errors branch), msg alone says it.
func writeParamError(w http.ResponseWriter, status int, code, param, msg string) {
	writeError(w, status, code, msg)
}
