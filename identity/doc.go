// Package identity owns who a sidecar is and whom it trusts: X.509-SVID
// sources (the SPIFFE Workload API, or PEM files reloaded when they change),
// trust bundles for one or several (federated) trust domains, the TLS 1.3
// configurations both ends of a tunnel use, and the SPIFFE ID patterns that
// routes and policies match peers against.
//
// Certificates are fetched per handshake, so a rotated SVID is used by the
// next connection while live connections keep the session they have.
// Handshake refusals carry a Reason so the sidecar can log and count them
// precisely while the peer learns only that it was refused.
package identity
