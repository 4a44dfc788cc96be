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

// SliceFarm is the parameterized job "slice" for load tests
// (slice-farm.nomad.hcl): mock_driver allocations with a dynamic port and a
// health check, each served by one shared `slice farm` process running the
// real slice runtime without Chromium. Variables: bootstrap_url (required);
// datacenters, memory_mb, whatsapp_down_after (memory_max_mb, wa_url and
// wa_standin are accepted and unused). Never for production.
//
//go:embed slice-farm.nomad.hcl
var SliceFarm string
