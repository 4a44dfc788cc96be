// Package edge tests the production layout end to end, on real Nomad,
// Consul, PostgreSQL and Docker: nginx (jobs/edge.nomad.hcl, configured by
// ops/nginx) terminating TLS in front of two gateway replicas
// (jobs/gateway.nomad.hcl), which route each browser to its own slice. It
// has no code of its own; the tests are the point.
//
//	go test ./ops/edge/
package edge
