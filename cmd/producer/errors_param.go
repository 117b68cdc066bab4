package main

import "net/http"

// writeParamError is writeError for an error about one request field,
// param (the error object's "param" where the OpenAI error shape has it).
func writeParamError(w http.ResponseWriter, status int, code, param, msg string) {
	writeError(w, status, code, msg)
}
