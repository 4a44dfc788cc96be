// Package loadtest owns `make load`: the load run (load_test.go) that signs
// up hundreds of users through the real gateway, lets each use its own
// slice over HTTP and socket.io, and writes docs/reports/load-YYYY-MM-DD.md.
// The slices are served by the slice farm (package slice/farm, `slice
// farm`), which says why a farm.
package loadtest
