// Package jobs holds the Nomad job specifications of the platform, embedded
// so that the gateway registers exactly the files in this folder. README.md
// here explains each block, the HCL variables and the slice contract.
package jobs

import _ "embed"

// SliceDocker is the parameterized job "slice" with the docker driver
// (slice.nomad.hcl). Variables: image, bootstrap_url (required);
// datacenters, memory_mb, memory_max_mb, cpu_mhz, shm_size_mb,
// profiles_dir, network, uid_base, pids_limit, log_level, seccomp_profile,
// chromium_sandbox, chromium_from_host, wa_url, wa_standin, whatsapp_down_after,
// memory_soft_mb, wa_standin_weight.
//
//go:embed slice.nomad.hcl
var SliceDocker string

// SliceReaper is the parameterized sysbatch job "slice-profile-reaper"
// (slice-reaper.nomad.hcl): dispatched with meta slice_id when a slice is
// retired, it deletes that slice's profile directory on every node.
// Variables: image (required); profiles_dir, datacenters.
//
//go:embed slice-reaper.nomad.hcl
var SliceReaper string

// SliceRawExec is the same job with the raw_exec driver (slice-raw.nomad.hcl),
// for machines without Docker and for fast tests. Variables: slice_binary,
// bootstrap_url (required); datacenters, memory_mb, memory_max_mb, cpu_mhz,
// profiles_dir, log_level, wa_url, wa_standin, whatsapp_down_after.
//
//go:embed slice-raw.nomad.hcl
var SliceRawExec string

// Gateway is the service job "gateway" (gateway.nomad.hcl): the replicas of
// `slicehub serve`, registered in Consul as gateway and gateway-internal,
// rolled one at a time. Variables: gateway_binary, bootstrap_url,
// trusted_proxies (required); release, count, datacenters, consul_addr,
// nomad_addr, slice_driver, slice_image, slice_binary, slice_db_host,
// slice_seccomp_profile, wa_url, wa_standin, min_warm, max_slices,
// reconcile_interval, allowed_origins, cookie_secure, log_level, memory_mb,
// settings (any other setting, by environment variable). Secrets come from
// the Nomad Variable nomad/jobs/gateway, one item per environment variable
// (DATABASE_URL; STRIPE_*, NOMAD_TOKEN, CONSUL_HTTP_TOKEN as needed).
//
//go:embed gateway.nomad.hcl
var Gateway string

// Edge is the service job "edge" (edge.nomad.hcl): nginx with TLS, its
// upstreams rendered from Consul. Variables: nginx_conf (the template,
// ops/nginx.Template; required); nginx_binary, nginx_user, datacenters,
// count, https_port, http_port, internal_port, public_network, server_name,
// spa_dir. The certificate comes from the Nomad Variable nomad/jobs/edge
// (tls_cert, tls_key).
//
//go:embed edge.nomad.hcl
var Edge string
