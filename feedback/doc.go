// Package feedback is the one feedback event of the FEEDBACK stream
// (docs/EVENTS.md): what a person did with an item or a generation, as
// clients publish it, the producer checks it and the scheduler's
// consumers read it.
//
// Event is its only Go type. Decode reads an event's bytes once and runs
// the named rules (Check) that every entry point shares, so the API, the
// CLI and each consumer accept and refuse the same events for the same
// reasons; Publish is the one way onto the stream. The loop (package
// loop) builds feedback on a generation from its record and checks it
// against that record (loop.Intake); the recommender applies the event's
// Interaction, fine-tuning (finetune.FeedbackCollector) keeps accepts and
// edits as samples, and the loop metrics count it.
package feedback
