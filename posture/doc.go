// Package posture decides whether a peer may use a route: who it is (its
// SPIFFE ID, already verified by mTLS), what device it runs on (a signed
// posture token bound to its SVID), where it sits (the jurisdiction policy
// binds to its identity) and where the data may go (residency rules).
//
// The decision is one of allow, deidentify (with a masking profile) or deny,
// always with reasons and the policy version it came from. Deny is the
// default: no policy, no matching rule, or any failed requirement denies.
//
// The parts:
//
//   - Posture tokens: Issue and Verify, in the format TOKEN.md gives for
//     external issuers (ES256 or EdDSA compact JWS, bound to the holder's
//     SVID key).
//   - Host signals: Collect reads a Linux host's posture for the
//     development issuer.
//   - Policy: Parse and LoadFiles compile YAML documents (AccessPolicy,
//     PostureProfile, Jurisdictions, ResidencyRules, MaskingProfile) into an
//     immutable *Policy whose Version is a hash of its content.
//   - Decisions: Engine implements Decider against the policy it holds,
//     swapped atomically with SetPolicy, and caches admitted decisions.
//
// Nothing here logs: callers get reasons and typed errors, and decide what
// to record. No error carries a token or claim values beyond IDs.
package posture
