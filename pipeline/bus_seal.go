package pipeline

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// A sealed core-NATS stream binds its messages to one piece of work: the
// party that starts the work draws a random key and hands it to the party
// that publishes (through Redis, in the task's arguments, never over the
// bus); every message then carries an HMAC-SHA256 over its subject and body
// in the HeaderMAC header, and the reader drops the stream at the first
// message that does not verify. Subject permissions decide who may publish
// at all; the seal decides which publisher this stream belongs to, so a
// process with publish rights (or any process, on a server without them)
// cannot put words into another generation's reply.

// HeaderMAC is the header of a sealed message: its MAC in hex.
const HeaderMAC = "Tandem-Mac"

// SealKeyBytes is the size of a stream key; keys travel hex-encoded.
const SealKeyBytes = 32

// ErrForged means a message on a sealed stream did not carry the MAC of the
// stream's key: it was not sent by the holder of the key.
var ErrForged = errors.New("message failed authentication (not sent by the holder of the stream's key)")

// NewSealKey returns a fresh random stream key, hex-encoded.
func NewSealKey() string {
	b := make([]byte, SealKeyBytes)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms
	return hex.EncodeToString(b)
}

// ValidateSealKey checks that key is SealKeyBytes bytes of hex.
func ValidateSealKey(key string) error {
	b, err := hex.DecodeString(key)
	if err != nil || len(b) != SealKeyBytes {
		return fmt.Errorf("want %d hex digits (pipeline.NewSealKey)", 2*SealKeyBytes)
	}
	return nil
}

// sealMAC is HMAC-SHA256 under key over a version tag, the subject (which
// names the piece of work) and the body (which holds the sequence number).
func sealMAC(key, subject string, data []byte) (string, error) {
	k, err := hex.DecodeString(key)
	if err != nil || len(k) != SealKeyBytes {
		return "", fmt.Errorf("stream key: want %d hex digits", 2*SealKeyBytes)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte("tandem-seal-v1\x00"))
	m.Write([]byte(subject))
	m.Write([]byte{0})
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// PublishCoreSealed is PublishCore with the message sealed under key.
func (b *Bus) PublishCoreSealed(subject, key string, v any) error {
	if err := validateSubject(subject, false); err != nil {
		return err
	}
	data, err := encodeEvent(v)
	if err != nil {
		return fmt.Errorf("pipeline: publish %s: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	if err := Seal(key, msg); err != nil {
		return fmt.Errorf("pipeline: publish %s: %w", subject, err)
	}
	if b.isClosed() {
		return ErrBusClosed
	}
	if err := b.NC.PublishMsg(msg); err != nil {
		return fmt.Errorf("pipeline: publish %s: %w", subject, err)
	}
	return nil
}

// Seal sets msg's HeaderMAC to the MAC of its subject and body under key.
func Seal(key string, msg *nats.Msg) error {
	mac, err := sealMAC(key, msg.Subject, msg.Data)
	if err != nil {
		return err
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header.Set(HeaderMAC, mac)
	return nil
}

// SubscribeCoreSealed is SubscribeCore for a sealed stream: h gets each
// message with nil, or with an error wrapping ErrForged when the message
// was not sealed under key (the caller must not act on it).
func (b *Bus) SubscribeCoreSealed(subject, key string, h func(subject string, data []byte, err error)) (stop func(), err error) {
	if h == nil {
		return nil, fmt.Errorf("pipeline: subscribe %s: handler is nil", subject)
	}
	return b.subscribeCore(subject, func() (*nats.Subscription, error) {
		return b.NC.Subscribe(subject, func(m *nats.Msg) { h(m.Subject, m.Data, CheckSeal(key, m)) })
	})
}

// CheckSeal verifies that msg was sealed under key; it returns an error
// wrapping ErrForged when it was not.
func CheckSeal(key string, msg *nats.Msg) error {
	want, err := sealMAC(key, msg.Subject, msg.Data)
	if err != nil {
		return err
	}
	got := msg.Header.Get(HeaderMAC)
	if got == "" {
		return fmt.Errorf("%w: no %s header", ErrForged, HeaderMAC)
	}
	if !hmac.Equal([]byte(got), []byte(want)) {
		return fmt.Errorf("%w: wrong %s", ErrForged, HeaderMAC)
	}
	return nil
}
