// Package adversarial holds the adversarial suite: the three real binaries
// (scheduler with its embedded nats-server, worker, producer serve with API
// tokens) on a private redis-server, driven from outside as a careless
// client or an attacker with an ordinary submit token would. It has one
// case per finding of the adversarial run written up in docs/SECURITY.md
// and docs/RELIABILITY.md; each case asserts what a client observes and
// what the stack's state is afterwards. The package has no code outside its
// tests.
package adversarial
