// Package hostile is the adversarial suite of the threat model "a slice is
// hostile" (issue 13; docs/architecture.md): it runs the real platform
// (the slicehub daemon, Nomad, Consul, PostgreSQL and the docker driver,
// slices on the stack's slice network behind devenv's firewall), copies an
// attacker's program (hostile/probe) into a real slice container, runs it
// there as the slice's own uid from the slice's own network namespace, and
// asserts that every attempt outside the slice's allowance is denied, and
// that the allowance itself works: its own database, the bootstrap
// endpoint, DNS and the internet (a TEST-NET container of the test's own
// stands in for it). It has no code outside its tests.
package hostile
