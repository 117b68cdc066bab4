// Package jobs is the catalogue of Tandem's job kinds. kinds.go names
// every kind once, with its summary, whether the public API may enqueue it
// (PublicNames, CheckPublic; internal kinds say who enqueues them) and,
// for the kinds this package runs, its registration (RegisterAll), payload
// check (ValidatePayload) and `worker exec` entry (Exec); each of those
// kinds has a file with its args, Validate and handler. The batch kinds
// (generate:chunk, generate:finalize, webhook) are named here and owned by
// package batch, which registers them (batch.Register, batch.Attach).
package jobs
