# The slice job for load tests: the contract shape of slice.nomad.hcl
# (parameterized on slice_id, a dynamic port "http", a Consul service
# "slice" with meta slice_id and alloc_id, health-checked on /api/health)
# around Nomad's mock_driver task, which runs no process. One "slice farm"
# process (`slice farm`, package slice/farm) serves every such allocation it
# finds in Consul's catalog on the port Nomad reserved for it, with the real
# slice runtime (package slice: handlers, socket.io, CRM, gateway token)
# minus Chromium, and bootstraps each allocation's credentials from the
# gateway as a real slice does. Chromium does not fit 500 times on 2 cores,
# and neither do 500 executor + logmon processes (raw_exec) or containers.
#
# The gateway registers it with `slicehub serve -slice-driver farm`. It
# needs a Nomad built without the `release` tag (mock_driver, devenv allows
# it). Never in production: nothing runs unless a farm is running.

variable "datacenters" {
  type    = string
  default = "dc1"
}

variable "bootstrap_url" {
  type        = string
  description = "The gateway's internal listener; the farm reads it from the service meta, as a slice reads it from its env."
}

variable "memory_mb" {
  type        = number
  default     = 10
  description = "Reservation per slice (Nomad's minimum is 10): what placement counts."
}

# Passed by the gateway for every driver; unused here (nothing runs).
variable "memory_max_mb" {
  type    = number
  default = 0
}

variable "wa_url" {
  type    = string
  default = ""
}

variable "wa_standin" {
  type    = string
  default = "false"
}

variable "whatsapp_down_after" {
  type        = string
  default     = "10m"
  description = "How long the WhatsApp check stays a warning while WhatsApp is disconnected before it turns critical: the gateway passes its -alert-whatsapp-down."
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
      attempts = 10
      interval = "30m"
      delay    = "1s"
      mode     = "delay"
    }

    reschedule {
      attempts       = 0
      unlimited      = true
      delay          = "10s"
      delay_function = "exponential"
      max_delay      = "5m"
    }

    # The default of 300 MB per allocation would make disk, not memory, the
    # limit of 500 children.
    ephemeral_disk {
      size = 10
    }

    network {
      port "http" {}
    }

    service {
      provider = "consul"
      name     = "slice"
      port     = "http"
      tags     = ["slicehub", "slice-${NOMAD_META_slice_id}"]

      meta {
        slice_id      = "${NOMAD_META_slice_id}"
        alloc_id      = "${NOMAD_ALLOC_ID}"
        bootstrap_url = var.bootstrap_url
      }

      # The same check as a real slice's, every 5 s instead of 2 s: 500
      # slices checked every 2 s would be 250 checks a second, each a
      # database ping, on the 2 cores that also run the load. No
      # check_restart: restarting a mock task restarts nothing.
      check {
        name     = "slice health"
        type     = "http"
        path     = "/api/health"
        interval = "5s"
        timeout  = "2s"
      }

      # WhatsApp's state for operators in the Consul UI: passing connected,
      # warning waiting for a QR scan or linking, critical disconnected past
      # whatsapp_down_after. Every 30 s here (500 slices make 17 checks a
      # second). It never routes (the gateway's route table looks at
      # "slice health" only) and never restarts (no check_restart).
      check {
        name     = "whatsapp"
        type     = "http"
        path     = "/api/health/whatsapp?down_after=${var.whatsapp_down_after}"
        interval = "30s"
        timeout  = "2s"
      }
    }

    task "slice" {
      driver = "mock_driver"

      config {
        run_for   = "87600h"
        exit_code = 0
      }

      # The workload identity the farm presents at bootstrap for this
      # allocation, as a real slice does (secrets/nomad_token).
      identity {
        env  = false
        file = true
      }

      # No logmon per allocation: there is nothing to log.
      logs {
        disabled      = true
        max_files     = 1
        max_file_size = 1
      }

      resources {
        cpu    = 1
        memory = var.memory_mb
      }
    }
  }
}
