package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ai/tandem/limits"
)

// Why a message was dead-lettered (DeadLetter.Cause).
const (
	DeadLetterBadEvent   = "bad_event"   // the handler returned a BadEvent error
	DeadLetterMaxDeliver = "max_deliver" // every allowed delivery failed
)

// Dead-letter limits.
const (
	// MaxDeadLetterReason bounds the handler error kept in a dead letter.
	MaxDeadLetterReason = limits.DeadLetterReasonBytes
	// maxDeadLetterBytes fits a MaxEventBytes payload base64-encoded (4/3)
	// plus the envelope and reason, with room to spare.
	maxDeadLetterBytes = limits.DeadLetterBytes
	// deadLetterPublishTimeout bounds the dead-letter publish; it runs even
	// while the consumer's context is being cancelled.
	deadLetterPublishTimeout = 10 * time.Second
)

// DeadLetter is the JSON envelope published on a consumer's dead-letter
// subject. Data holds the original payload when it is valid JSON; otherwise
// DataBase64 holds it.
type DeadLetter struct {
	Stream     string          `json:"stream"`
	Consumer   string          `json:"consumer"`
	Subject    string          `json:"subject"`
	MsgID      string          `json:"msg_id,omitempty"`
	StreamSeq  uint64          `json:"stream_seq"`
	Delivered  uint64          `json:"delivered"`
	Cause      string          `json:"cause"`
	Reason     string          `json:"reason"`
	FailedAt   time.Time       `json:"failed_at"`
	Data       json.RawMessage `json:"data,omitempty"`
	DataBase64 []byte          `json:"data_base64,omitempty"`
}

// Payload returns the original message bytes, whichever field holds them.
func (dl DeadLetter) Payload() []byte {
	if len(dl.Data) > 0 {
		return dl.Data
	}
	return dl.DataBase64
}

// deadLetter publishes the envelope, then terminates the message so it is
// never redelivered. If the publish fails the message is Nak'ed instead: the
// server allows deadLetterSlack more deliveries, so it is tried again rather
// than lost.
func (r *consumerRun) deadLetter(msg jetstream.Msg, d Delivery, cause error, kind string, log *slog.Logger) {
	dl := DeadLetter{
		Stream:    d.Stream,
		Consumer:  d.Consumer,
		Subject:   d.Subject,
		MsgID:     d.MsgID,
		StreamSeq: d.StreamSeq,
		Delivered: d.NumDelivered,
		Cause:     kind,
		Reason:    truncateUTF8(cause.Error(), MaxDeadLetterReason),
		FailedAt:  time.Now().UTC(),
	}
	if len(d.Data) > 0 && json.Valid(d.Data) {
		dl.Data = d.Data
	} else {
		dl.DataBase64 = d.Data
	}
	data, err := json.Marshal(dl)
	if err == nil && len(data) > maxDeadLetterBytes {
		err = fmt.Errorf("%w: dead letter is %d bytes, limit %d", ErrEventTooLarge, len(data), maxDeadLetterBytes)
	}
	if err == nil {
		// The id makes a repeated dead-letter publish (after a lost Term) a duplicate.
		id := "dlq-" + d.Stream + "-" + d.Consumer + "-" + strconv.FormatUint(d.StreamSeq, 10)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), deadLetterPublishTimeout)
		_, err = r.bus.publishRaw(ctx, r.spec.DeadLetterSubject, id, data)
		cancel()
	}
	if err != nil {
		log.Error("nats consumer: dead-letter publish failed; will retry on redelivery", "cause", kind, "reason", cause, "err", err)
		_ = msg.NakWithDelay(r.spec.RetryBackoff)
		return
	}
	log.Warn("nats consumer: message dead-lettered", "cause", kind, "reason", cause, "dead_letter_subject", r.spec.DeadLetterSubject)
	if err := msg.TermWithReason(kind); err != nil {
		log.Warn("nats consumer: term failed; a redelivery will be dead-lettered again as a duplicate", "err", err)
	}
}

// truncateUTF8 cuts s to at most n bytes, plus an ellipsis, without
// splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	// Drop a rune the cut split in two (at most UTFMax-1 trailing bytes).
	for i := 0; i < utf8.UTFMax-1 && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s + "…"
}
