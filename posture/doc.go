// Package posture decides whether a peer may use a route: who it is (its
// SPIFFE ID, already verified by mTLS), what device it runs on (a signed
// posture token bound to its SVID), where it sits (the jurisdiction policy
// binds to its identity) and where the data may go (residency rules).
//
// The decision is one of allow, deidentify (with a masking profile) or deny,
// always with reasons and the policy version it came from. Deny is the
// default: no policy, no matching rule, or any failed requirement denies.
package posture
