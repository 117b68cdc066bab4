// Package generation holds what every generating job kind runs on, apart
// from the kinds themselves (package jobs): the worker's model store
// (ModelStore, LoadedModel), the GPU it copies models onto (StoreConfig.Device), the
// batch request and response line format (RequestLine, ResponseLine) and
// the decoding of request lines (GenerateLines); soon also the engine that
// decodes every job's sequences together.
package generation
