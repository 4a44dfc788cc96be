// Package jobs holds the Nomad job specifications of the platform, embedded
// so that the gateway registers exactly the files in this folder. README.md
// here explains each block, the HCL variables and the slice contract.
package jobs

import _ "embed"

// SliceDocker is the parameterized job "slice" with the docker driver
// (slice.nomad.hcl). Variables: image, bootstrap_url (required);
// datacenters, memory_mb, memory_max_mb, cpu_mhz, shm_size_mb,
// profiles_volume, log_level, seccomp_profile, chromium_sandbox, wa_url,
// wa_standin.
//
//go:embed slice.nomad.hcl
var SliceDocker string

// SliceRawExec is the same job with the raw_exec driver (slice-raw.nomad.hcl),
// for machines without Docker and for fast tests. Variables: slice_binary,
// bootstrap_url (required); datacenters, memory_mb, memory_max_mb, cpu_mhz,
// profiles_dir, log_level, wa_url, wa_standin.
//
//go:embed slice-raw.nomad.hcl
var SliceRawExec string
