package jobs

import _ "embed"

// SliceMock is the parameterized job "slice" with Nomad's mock_driver
// (slice-mock.nomad.hcl): no process runs, for the scheduler's tests and
// benchmarks. Variables (all optional): datacenters, service_name,
// memory_mb, cpu_mhz, disk_mb, run_for, exit_code, restart_attempts,
// restart_delay. Never for production.
//
//go:embed slice-mock.nomad.hcl
var SliceMock string
