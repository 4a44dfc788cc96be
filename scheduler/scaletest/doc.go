// Package scaletest holds the scheduler's tests that need two Nomad client
// nodes (testsupport.Options{NomadClients: 2}): a node drain followed
// through the admin API and slicectl, and the scale run of `make scale`
// (1,000 and 5,000 mock_driver slices, SLICEHUB_SCALE=1). They live apart
// from package scheduler's tests, whose single-node stack stays as fast as
// it was. It has no non-test code.
package scaletest
