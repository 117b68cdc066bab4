package pipeline

import (
	"fmt"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/limits"
)

// Every NATS stream and subject Tandem uses is named here, and only here.
//
// Persisted traffic (JetStream) lives under tandem.feedback.>, tandem.events.>
// and tandem.dlq.>. Ephemeral traffic (core NATS, lost when nobody listens)
// lives under tandem.batch.<id>.progress, tandem.gen.<id>.tokens and
// tandem.gen.<id>.cancel; those subjects are deliberately outside every
// stream so that token streams never fill the disk.

// Stream names.
const (
	// StreamFeedback keeps user feedback (ratings, edits, accepts) until the
	// recommender and the fine-tune gatherer have consumed it.
	StreamFeedback = "FEEDBACK"
	// StreamEvents keeps job lifecycle events (batch finished, model published).
	StreamEvents = "EVENTS"
	// StreamDeadLetter keeps messages that consumers gave up on, with the reason.
	StreamDeadLetter = "DEADLETTER"
)

// Subject prefixes and wildcards.
const (
	SubjectFeedbackPrefix   = "tandem.feedback."
	SubjectEventsPrefix     = "tandem.events."
	SubjectDeadLetterPrefix = "tandem.dlq."

	SubjectFeedbackAll   = SubjectFeedbackPrefix + ">"
	SubjectEventsAll     = SubjectEventsPrefix + ">"
	SubjectDeadLetterAll = SubjectDeadLetterPrefix + ">"

	// SubjectBatchProgressAll matches the progress of every batch (core NATS).
	SubjectBatchProgressAll = "tandem.batch.*.progress"
	// SubjectGenTokensAll matches every interactive generation's token stream.
	SubjectGenTokensAll = "tandem.gen.*.tokens"
	// SubjectGenCancelAll matches every interactive generation's cancel signal.
	SubjectGenCancelAll = "tandem.gen.*.cancel"
)

// Limits on what the bus accepts.
const (
	// MaxEventBytes bounds one encoded event (JSON payload, headers excluded).
	// Events carry ids and small facts; bulk data goes to the artifact store.
	MaxEventBytes = limits.EventBytes
	// MaxTokenLen bounds one id used as a subject token or durable name.
	MaxTokenLen = limits.SubjectTokenLen
	// MaxMsgIDLen bounds a Nats-Msg-Id value.
	MaxMsgIDLen = limits.MsgIDLen
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id.
	DuplicateWindow = 2 * time.Minute
)

// headerAllowance is the room a stream leaves for headers on top of the
// payload limit (JetStream counts headers in max_msg_size).
const headerAllowance = 4 << 10

// StreamSpec describes one JetStream stream Tandem owns. All of them use file
// storage, limits retention and discard-old, so a full stream drops its oldest
// messages instead of refusing producers.
type StreamSpec struct {
	Name        string
	Description string
	Subjects    []string
	MaxAge      time.Duration // oldest message kept
	MaxBytes    int64         // total size kept
	MaxMsgs     int64         // count kept; -1 unlimited
	MaxMsgSize  int32         // one message, headers included
	Duplicates  time.Duration // Nats-Msg-Id dedupe window
	Replicas    int           // 1 on one server, 3 in the production cluster
}

// DefaultStreams lists the streams EnsureStreams creates. Their byte limits add
// up to 768 MiB, under the 1 GiB store StartEmbeddedNATS gives JetStream.
func DefaultStreams() []StreamSpec {
	return []StreamSpec{
		{
			Name:        StreamFeedback,
			Description: "user feedback events; consumed by the recommender and fine-tune gatherer",
			Subjects:    []string{SubjectFeedbackAll},
			MaxAge:      7 * 24 * time.Hour,
			MaxBytes:    512 << 20,
			MaxMsgs:     -1,
			MaxMsgSize:  MaxEventBytes + headerAllowance,
			Duplicates:  DuplicateWindow,
			Replicas:    1,
		},
		{
			Name:        StreamEvents,
			Description: "job lifecycle events",
			Subjects:    []string{SubjectEventsAll},
			MaxAge:      24 * time.Hour,
			MaxBytes:    128 << 20,
			MaxMsgs:     -1,
			MaxMsgSize:  MaxEventBytes + headerAllowance,
			Duplicates:  DuplicateWindow,
			Replicas:    1,
		},
		{
			Name:        StreamDeadLetter,
			Description: "messages consumers gave up on, with the reason",
			Subjects:    []string{SubjectDeadLetterAll},
			MaxAge:      30 * 24 * time.Hour,
			MaxBytes:    128 << 20,
			MaxMsgs:     -1,
			// A dead letter wraps a whole event, base64 when it is not JSON.
			MaxMsgSize: maxDeadLetterBytes,
			Duplicates: DuplicateWindow,
			Replicas:   1,
		},
	}
}

// ValidateID reports whether id can be used as one subject token or durable
// name: 1..MaxTokenLen characters from [A-Za-z0-9_-]. Dots, wildcards, spaces
// and control characters are refused so that an id can never widen or split a
// subject (an id of ">" would otherwise subscribe to everything).
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: id is empty", ErrBadSubject)
	}
	if len(id) > MaxTokenLen {
		return fmt.Errorf("%w: id is %d bytes, limit %d", ErrBadSubject, len(id), MaxTokenLen)
	}
	for i := 0; i < len(id); i++ {
		if !isTokenByte(id[i]) {
			return fmt.Errorf("%w: id %q has %q at byte %d (allowed: A-Z a-z 0-9 _ -)", ErrBadSubject, id, id[i], i)
		}
	}
	return nil
}

func isTokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// BatchProgressSubject is the core-NATS subject carrying a batch's progress.
// It returns "" when batchID fails ValidateID; publishing to "" is refused.
func BatchProgressSubject(batchID string) string {
	if ValidateID(batchID) != nil {
		return ""
	}
	return "tandem.batch." + batchID + ".progress"
}

// GenTokensSubject is the core-NATS subject streaming an interactive
// generation's tokens. It returns "" when genID fails ValidateID.
func GenTokensSubject(genID string) string {
	if ValidateID(genID) != nil {
		return ""
	}
	return "tandem.gen." + genID + ".tokens"
}

// GenCancelSubject is the core-NATS subject on which the producer asks the
// worker running interactive generation genID to stop (its client went
// away). The worker subscribes before it announces the start of the
// generation on GenTokensSubject, so a cancel sent after that start is never
// missed. It returns "" when genID fails ValidateID.
func GenCancelSubject(genID string) string {
	if ValidateID(genID) != nil {
		return ""
	}
	return "tandem.gen." + genID + ".cancel"
}

// FeedbackSubject is the JetStream subject for one kind of feedback, e.g.
// "rating" or "edit". kind may have several dot-separated tokens, each passing
// ValidateID; otherwise the result is "".
func FeedbackSubject(kind string) string { return joinSubject(SubjectFeedbackPrefix, kind) }

// EventSubject is the JetStream subject for a lifecycle event such as
// "batch.completed"; "" when a token fails ValidateID.
func EventSubject(name string) string { return joinSubject(SubjectEventsPrefix, name) }

// DeadLetterSubject is where a consumer's dead letters go by default.
func DeadLetterSubject(durable string) string { return joinSubject(SubjectDeadLetterPrefix, durable) }

func joinSubject(prefix, suffix string) string {
	for _, tok := range strings.Split(suffix, ".") {
		if ValidateID(tok) != nil {
			return ""
		}
	}
	return prefix + suffix
}

// validateSubject checks a subject before it reaches the server: non-empty,
// no empty tokens, no whitespace or control bytes, and wildcards only when
// allowed ("*" as a whole token, ">" as the last token).
func validateSubject(subject string, allowWildcards bool) error {
	if subject == "" {
		return fmt.Errorf("%w: subject is empty (did an id fail ValidateID?)", ErrBadSubject)
	}
	if len(subject) > 1024 {
		return fmt.Errorf("%w: subject is %d bytes, limit 1024", ErrBadSubject, len(subject))
	}
	toks := strings.Split(subject, ".")
	for i, tok := range toks {
		if tok == "" {
			return fmt.Errorf("%w: subject %q has an empty token", ErrBadSubject, subject)
		}
		for j := 0; j < len(tok); j++ {
			if c := tok[j]; c <= ' ' || c == 0x7f {
				return fmt.Errorf("%w: subject %q has whitespace or a control byte", ErrBadSubject, subject)
			}
		}
		if strings.ContainsAny(tok, "*>") {
			switch {
			case !allowWildcards:
				return fmt.Errorf("%w: subject %q has a wildcard; publishing needs a literal subject", ErrBadSubject, subject)
			case tok == "*", tok == ">" && i == len(toks)-1:
			default:
				return fmt.Errorf("%w: subject %q misuses a wildcard in token %q", ErrBadSubject, subject, tok)
			}
		}
	}
	return nil
}
