// Package proxy is the sidecar's data path: listeners, the medgate/1 tunnel
// between two sidecars, and the copy loops that carry an unchanged app's
// bytes through it.
//
// An outbound route accepts plaintext connections from the local app on
// loopback, dials the remote sidecar over SPIFFE mTLS, and opens a session
// with a hello frame. An inbound route accepts tunnels from remote
// sidecars, admits or denies each session through a posture.Decider before
// any application byte flows, then connects to the local app.
//
// Every connection is bounded: handshakes in time and number (a flood of
// silent clients is evicted oldest first rather than starving real ones),
// sessions in number, idle time, and drain time on shutdown.
package proxy
