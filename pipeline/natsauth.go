package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS roles: the user names a Tandem process logs in to NATS with, one per
// kind of process. The scheduler's embedded server defines exactly these
// users, and so does the Kubernetes NATS config (k8s/base/config/nats.conf);
// each has the subject permissions of NATSRolePermissions, so that a process
// can do on the bus only what its part of the pipeline needs.
const (
	// RoleProducer is `producer serve` and the producer CLI: it publishes
	// feedback and cancels and reads token streams.
	RoleProducer = "producer"
	// RoleWorker runs jobs: it publishes tokens, progress and lifecycle
	// events, and listens for cancels.
	RoleWorker = "worker"
	// RoleScheduler owns the streams and consumes feedback.
	RoleScheduler = "scheduler"
	// RoleObserver is for integrations outside Tandem: it may follow
	// progress and read the EVENTS stream message by message, and publish
	// nothing of Tandem's. It may not create consumers: a push consumer
	// delivers to a subject of its creator's choice, past that subject's
	// publish permissions.
	RoleObserver = "observer"
)

// NATSRoles lists every role.
func NATSRoles() []string {
	return []string{RoleProducer, RoleWorker, RoleScheduler, RoleObserver}
}

// NATSPermissions is what one role may do on the bus: publish to the
// subjects of Publish except those of PublishDeny, and subscribe to those of
// Subscribe. Subjects use NATS wildcards.
type NATSPermissions struct {
	Publish     []string
	PublishDeny []string
	Subscribe   []string
}

// JetStream and client plumbing subjects the roles need.
const (
	// jsAPIAll is JetStream's API: streams, consumers, pull requests.
	jsAPIAll = "$JS.API.>"
	// jsAckAll carries consumers' acknowledgements.
	jsAckAll = "$JS.ACK.>"
	// jsFlowControlAll carries the flow-control replies of ordered
	// consumers (reading an object from the artifact store).
	jsFlowControlAll = "$JS.FC.>"
	// objectStoreAll is where object store puts publish chunks and metadata.
	objectStoreAll = "$O.>"
)

// NATSInboxPrefix is the reply-subject prefix of role's connections. Each
// role has its own, so that no role can subscribe to the replies another
// receives (JetStream acknowledgements, objects read from the artifact
// store).
func NATSInboxPrefix(role string) string { return "_INBOX_" + role }

// tandemStreamsGuard lists the JetStream API calls on Tandem's own streams
// that would destroy events: no role but the scheduler may make them.
func tandemStreamsGuard() []string {
	var deny []string
	for _, s := range []string{StreamFeedback, StreamEvents, StreamDeadLetter} {
		deny = append(deny,
			"$JS.API.STREAM.DELETE."+s,
			"$JS.API.STREAM.PURGE."+s,
			"$JS.API.STREAM.MSG.DELETE."+s,
			"$JS.API.CONSUMER.DELETE."+s+".>",
		)
	}
	return deny
}

// NATSRolePermissions returns the permissions of role, and false for a name
// that is no role. The table, with who uses each subject:
//
//	subject                     producer   worker   scheduler  observer
//	tandem.gen.*.tokens         sub        pub      -          -
//	tandem.gen.*.cancel         pub        sub      -          -
//	tandem.batch.*.progress     pub, sub   pub      -          sub
//	tandem.finetune.*.progress  sub        pub      -          sub
//	tandem.feedback.>           pub        -        (consumer) -
//	tandem.events.>             -          pub      -          (consumer)
//	tandem.dlq.>                -          -        pub        -
//	$JS.API.>                   yes*       yes*     yes        read EVENTS**
//	$JS.ACK.>                   -          -        yes        -
//	$O.>, $JS.FC.>              pub        pub      pub        -
//	_INBOX_<role>.>             sub        sub      sub        sub
//
// (*) except deleting or purging FEEDBACK, EVENTS and DEADLETTER, deleting
// their messages or their consumers. Producers and workers ensure the
// streams they publish to (EnsureStreams) and the artifact store's bucket,
// so they keep the rest of the JetStream API.
// (**) account and stream info, and messages of EVENTS by sequence
// (STREAM.MSG.GET, DIRECT.GET); no consumers.
func NATSRolePermissions(role string) (NATSPermissions, bool) {
	inbox := NATSInboxPrefix(role) + ".>"
	switch role {
	case RoleProducer:
		return NATSPermissions{
			Publish:     []string{SubjectGenCancelAll, SubjectFeedbackAll, SubjectBatchProgressAll, jsAPIAll, jsFlowControlAll, objectStoreAll},
			PublishDeny: tandemStreamsGuard(),
			Subscribe:   []string{SubjectGenTokensAll, SubjectBatchProgressAll, SubjectFinetuneProgressAll, inbox},
		}, true
	case RoleWorker:
		return NATSPermissions{
			Publish:     []string{SubjectGenTokensAll, SubjectBatchProgressAll, SubjectFinetuneProgressAll, SubjectEventsAll, jsAPIAll, jsFlowControlAll, objectStoreAll},
			PublishDeny: tandemStreamsGuard(),
			Subscribe:   []string{SubjectGenCancelAll, inbox},
		}, true
	case RoleScheduler:
		return NATSPermissions{
			Publish:   []string{SubjectDeadLetterAll, jsAPIAll, jsAckAll, jsFlowControlAll, objectStoreAll},
			Subscribe: []string{inbox},
		}, true
	case RoleObserver:
		ev := StreamEvents
		return NATSPermissions{
			Publish: []string{
				"$JS.API.INFO",
				"$JS.API.STREAM.INFO." + ev,
				"$JS.API.STREAM.MSG.GET." + ev,
				"$JS.API.DIRECT.GET." + ev, "$JS.API.DIRECT.GET." + ev + ".>",
			},
			Subscribe: []string{SubjectBatchProgressAll, SubjectFinetuneProgressAll, inbox},
		}, true
	}
	return NATSPermissions{}, false
}

// NATSRoleOptions are the connection options of a process logging in as
// role with password: the user and password, and the role's own reply
// prefix (the only inbox its permissions let it subscribe to).
func NATSRoleOptions(role, password string) []nats.Option {
	return []nats.Option{nats.UserInfo(role, password), nats.CustomInboxPrefix(NATSInboxPrefix(role))}
}

// NATSCredentials maps each role to its password.
type NATSCredentials map[string]string

// NATSCredentialsDir is where a scheduler hosting the embedded server keeps
// the password of each role: one file per role, named after it, mode 0600.
// Other processes on the machine log in with TANDEM_NATS_USER=<role> and
// TANDEM_NATS_PASSWORD_FILE=<this dir>/<role>.
func NATSCredentialsDir(dataDir string) string { return filepath.Join(dataDir, "nats-credentials") }

// natsPasswordBytes is the randomness of a generated password (hex-encoded,
// so twice as many characters).
const natsPasswordBytes = 32

// LoadOrCreateNATSCredentials returns a password for every role from dir,
// generating a random one for each role that has no file yet (written 0600
// in a 0700 dir). Passwords already there are kept, so processes that hold
// them still log in after the scheduler restarts; delete the directory to
// rotate them. A file that others may read, or that holds no password, is
// an error naming it.
func LoadOrCreateNATSCredentials(dir string) (NATSCredentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pipeline: NATS credentials: %w", err)
	}
	creds := make(NATSCredentials)
	for _, role := range NATSRoles() {
		path := filepath.Join(dir, role)
		pw, err := ReadNATSPasswordFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			pw, err = writeNATSPassword(path)
		}
		if err != nil {
			return nil, fmt.Errorf("pipeline: NATS credentials of role %s: %w", role, err)
		}
		creds[role] = pw
	}
	return creds, nil
}

func writeNATSPassword(path string) (string, error) {
	b := make([]byte, natsPasswordBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, err = f.WriteString(pw + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return pw, nil
}

// ReadNATSPasswordFile reads a password file: its content without one
// trailing newline. A file that group or others may read is refused, as is
// an empty one or one with whitespace inside the password.
func ReadNATSPasswordFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s: mode %#o lets others read the password; want 0600 (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	switch {
	case pw == "":
		return "", fmt.Errorf("%s: empty; want the password on one line", path)
	case strings.ContainsAny(pw, " \t\r\n"):
		return "", fmt.Errorf("%s: whitespace inside the password; want it on one line", path)
	}
	return pw, nil
}

// WithEmbeddedRoles makes the server require a login as one of the roles,
// each with its password from creds and the permissions of
// NATSRolePermissions. Every role must have a password.
func WithEmbeddedRoles(creds NATSCredentials) EmbeddedOption {
	return func(c *embeddedConfig) { c.roles = creds }
}

// roleUsers turns credentials into the server's users.
func roleUsers(creds NATSCredentials) ([]*server.User, error) {
	var users []*server.User
	for _, role := range NATSRoles() {
		pw := creds[role]
		if pw == "" {
			return nil, fmt.Errorf("role %s has no password", role)
		}
		p, _ := NATSRolePermissions(role)
		users = append(users, &server.User{Username: role, Password: pw, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: slices.Clone(p.Publish), Deny: slices.Clone(p.PublishDeny)},
			Subscribe: &server.SubjectPermission{Allow: slices.Clone(p.Subscribe)},
		}})
	}
	for role := range creds {
		if _, ok := NATSRolePermissions(role); !ok {
			return nil, fmt.Errorf("%q is not a role (want one of %v)", role, NATSRoles())
		}
	}
	return users, nil
}
