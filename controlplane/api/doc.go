// Package api holds the control plane's protobuf messages and gRPC services,
// generated from controlplane.proto by `make generate`.
package api

// The policy resource's xDS type URL and name.
const (
	PolicySetType = "type.googleapis.com/medgate.controlplane.v1.PolicySet"
	PolicySetName = "policy"
)
