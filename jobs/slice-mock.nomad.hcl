# The slice job, mock_driver: the same contract shape as slice.nomad.hcl
# (parameterized on slice_id, a Consul service "slice" with meta slice_id,
# restart and reschedule that never give up) around a fake task that runs
# no process. For the scheduler's tests and benchmarks, where only the pool
# logic is under test: a thousand children cost Nomad a few goroutines
# each, and no logmon (logs are disabled).
#
# mock_driver exists only in a Nomad built without the `release` tag (ours,
# see ops/tools.sh), and must be in the client's driver.allowlist (devenv
# puts it there). Never register this file in production.
#
#   nomad job run -var service_name=slice-test jobs/slice-mock.nomad.hcl

variable "datacenters" {
  type    = string
  default = "dc1"
}

variable "service_name" {
  type        = string
  default     = "slice"
  description = "Consul service name; tests give each pool its own."
}

variable "memory_mb" {
  type        = number
  default     = 10
  description = "Reservation per slice (Nomad's minimum is 10). Tests raise it to exhaust a node."
}

variable "cpu_mhz" {
  type    = number
  default = 1
}

variable "disk_mb" {
  type    = number
  default = 10
}

variable "run_for" {
  type        = string
  default     = "87600h"
  description = "How long the fake task runs before it exits with exit_code."
}

variable "start_block_for" {
  type        = string
  default     = "0s"
  description = "How long the fake task takes to start (the allocation stays pending): tests of admission control give slices a start time."
}

variable "exit_code" {
  type    = number
  default = 0
}

variable "restart_attempts" {
  type    = number
  default = 10
}

variable "restart_delay" {
  type    = string
  default = "5s"
}

job "slice" {
  type        = "batch"
  datacenters = split(",", var.datacenters)

  parameterized {
    meta_required = ["slice_id"]
    payload       = "forbidden"
  }

  group "slice" {
    count = 1

    restart {
      attempts = var.restart_attempts
      interval = "30m"
      delay    = var.restart_delay
      mode     = "delay"
    }

    reschedule {
      attempts       = 0
      unlimited      = true
      delay          = "10s"
      delay_function = "exponential"
      max_delay      = "5m"
    }

    # The default of 300 MB per allocation would make disk, not memory,
    # the limit of a thousand children.
    ephemeral_disk {
      size = var.disk_mb
    }

    task "slice" {
      driver = "mock_driver"

      config {
        run_for         = var.run_for
        exit_code       = var.exit_code
        start_block_for = var.start_block_for
        # The fake task "has" this address; the service below advertises
        # it with a fixed port, so a thousand children need no dynamic port.
        driver_ip = "127.0.0.1"
      }

      # No check: a service without checks passes, as a fake task has
      # nothing to answer one. The route table sees 127.0.0.1:9. The
      # allocation has no "http" port, so route provenance compares the
      # service ID with the recorded allocation only (no address).
      service {
        provider     = "consul"
        name         = var.service_name
        address_mode = "driver"
        port         = "9"
        tags         = ["slicehub", "slice-${NOMAD_META_slice_id}"]

        meta {
          slice_id = "${NOMAD_META_slice_id}"
          alloc_id = "${NOMAD_ALLOC_ID}"
        }
      }

      # Nomad checks the log budget against the disk even when logs are
      # disabled: keep it small.
      logs {
        disabled      = true
        max_files     = 1
        max_file_size = 1
      }

      resources {
        cpu    = var.cpu_mhz
        memory = var.memory_mb
      }
    }
  }
}
