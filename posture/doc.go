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
// # Conditions
//
// An AccessPolicy may carry a when expression in CEL
// (https://cel.dev), compiled and type-checked with the policy; it must
// be a bool and the route admits only when it is true. Its variables:
//
//	peer.id, peer.trust_domain, peer.path   string: the peer's SPIFFE ID and its parts
//	peer.jurisdiction                       string: bound by policy, "" when unmapped
//	local.id, local.trust_domain            string: this sidecar's SPIFFE ID
//	local.jurisdiction                      string
//	route.name, route.direction             string: "inbound" or "outbound"
//	route.data_class                        string
//	device.present                          bool: a posture token verified
//	device.issuer, device.device_id         string
//	device.os_name, device.os_version       string
//	device.kernel, device.edr_name          string
//	device.disk_encrypted, device.firewall  bool (false when the token says nothing)
//	device.screen_lock, device.edr_running  bool
//	now                                     timestamp: the decision time
//
// The device variables are filled only on an inbound route with a
// postureProfile, from a token that verified; elsewhere they are empty.
// An expression is at most MaxConditionLength bytes and its estimated
// worst-case cost at most ConditionCostLimit; evaluation stops at that
// cost. A false result denies with ReasonConditionFalse, a failed
// evaluation with ReasonConditionError.
//
// Nothing here logs: callers get reasons and typed errors, and decide what
// to record. No error carries a token or claim values beyond IDs.
package posture
