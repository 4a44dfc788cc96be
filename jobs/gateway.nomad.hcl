# The gateway as a Nomad service job: N identical replicas of `slicehub
# serve`, each with its own dynamic ports, registered in Consul as `gateway`
# (public listener, what nginx balances over) and `gateway-internal` (the
# slice bootstrap listener, which only the edge's private listener reaches).
#
#   nomad var put nomad/jobs/gateway DATABASE_URL='postgres://...' \
#     CONSUL_HTTP_TOKEN=<the gateway's Consul token> NOMAD_TOKEN=<the gateway's Nomad token>
#   (least-privilege tokens: jobs/README.md, "ACLs and tokens")
#   nomad job run -var gateway_binary=/opt/slicehub/bin/slicehub \
#     -var bootstrap_url=http://10.0.0.5:8081 -var slice_image=slicehub/slice:<hash> \
#     -var slice_seccomp_profile=/etc/slicehub/chromium-seccomp.json \
#     -var trusted_proxies=10.0.0.5 -var allowed_origins=https://app.example.com \
#     -var release=$(git rev-parse --short HEAD) jobs/gateway.nomad.hcl
#
# A new release (a new binary, or just a new `release` value) rolls the
# replicas one at a time; jobs/README.md ("The gateway and the edge")
# explains each block and how the secrets get in.

variable "gateway_binary" {
  type        = string
  description = "Absolute path of the slicehub binary on every client host (raw_exec). With the docker driver (see the comment in the task) this becomes an image."
}

variable "bootstrap_url" {
  type        = string
  description = "Where slices reach *some* gateway's internal listener: the edge's private listener (http://<edge private address>:<internal port>), which balances over the Consul service gateway-internal. Never one replica's own address: dispatched slices keep this URL for life, and a replica goes away at every deploy."
}

variable "release" {
  type        = string
  default     = "dev"
  description = "A label of what is deployed (a commit, a version). Part of the job's meta: changing it alone rolls the replicas, which is also how a rotated secret is picked up."
}

variable "count" {
  type        = number
  default     = 2
  description = "Replicas: one per CPU of the gateway hosts, as nginx runs one worker per CPU (each replica uses one; see gomaxprocs)."
}

variable "gomaxprocs" {
  type        = number
  default     = 1
  description = "Go's GOMAXPROCS in each replica. 1: the replica's one event loop has the only thread, which waits in the poller itself, and more replicas use more CPUs; measured faster than one replica with every CPU (docs/reports/bench-*.md, gateway against gw-1proc). 0 lets Go use every CPU."
}

variable "datacenters" {
  type    = string
  default = "dc1"
}

variable "consul_addr" {
  type        = string
  default     = "127.0.0.1:8500"
  description = "Consul HTTP address as seen from the gateway (the local agent)."
}

variable "nomad_addr" {
  type    = string
  default = "http://127.0.0.1:4646"
}

variable "slice_driver" {
  type    = string
  default = "docker"
}

variable "slice_image" {
  type        = string
  default     = ""
  description = "Slice image for the docker driver (slicehub/slice:<hash>). Required with slice_driver = docker: under Nomad the gateway's working directory is its task directory, so the bin/slice-image default of `make run` does not apply."
}

variable "slice_binary" {
  type        = string
  default     = ""
  description = "Slice binary for slice_driver = raw_exec (absolute path on the client hosts)."
}

variable "slice_seccomp_profile" {
  type        = string
  default     = ""
  description = "With slice_driver = docker: the seccomp profile for Chromium's sandbox, an absolute path on every client host (ops/image.sh writes it to bin/chromium-seccomp.json). Required there, for the same reason as slice_image."
}

variable "wa_url" {
  type        = string
  default     = ""
  description = "URL the slices' Chromium opens; empty: WhatsApp Web."
}

variable "wa_standin" {
  type        = bool
  default     = false
  description = "Slices serve the local stand-in for WhatsApp Web (machines without internet, tests)."
}

variable "settings" {
  type        = map(string)
  default     = {}
  description = "Any other non-secret setting of `slicehub serve`, by environment variable (README's configuration table), e.g. { SLICEHUB_BILLING_PRICE = \"price_...\" }. Keys set by the env block below must not be repeated here."
}

variable "slice_db_host" {
  type        = string
  default     = ""
  description = "PostgreSQL host as seen from slices; empty: the host of the gateway's DATABASE_URL."
}

variable "min_warm" {
  type    = number
  default = 1
}

variable "max_slices" {
  type    = number
  default = 50
}

variable "reconcile_interval" {
  type    = string
  default = "10s"
}

variable "trusted_proxies" {
  type        = string
  description = "Comma-separated addresses or CIDRs of the edge nginx hosts: their X-Forwarded-For is believed, nobody else's."
}

variable "allowed_origins" {
  type        = string
  default     = ""
  description = "Comma-separated origins besides the request's own host (https://app.example.com)."
}

variable "cookie_secure" {
  type        = bool
  default     = true
  description = "Secure cookies: the browser only ever talks TLS to the edge."
}

variable "log_level" {
  type    = string
  default = "info"
}

variable "memory_mb" {
  type    = number
  default = 256
}

job "gateway" {
  type        = "service"
  datacenters = split(",", var.datacenters)

  # Job meta ends up in every task's meta: changing `release` is a
  # destructive update, hence a rolling deploy. Nothing secret goes here;
  # meta is readable by anyone who can read the job.
  meta {
    release = var.release
  }

  group "gateway" {
    count = var.count

    # One replica at a time. A new allocation counts as healthy once every
    # Consul check of the group has passed (/readyz: PostgreSQL, the route
    # table, Nomad) and kept passing for min_healthy_time; only then is the
    # next old one stopped. A release that never gets healthy is rolled
    # back to the last good version.
    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "10s"
      healthy_deadline  = "2m"
      progress_deadline = "5m"
      auto_revert       = true
    }

    # Replicas on different hosts when there are several; a soft preference,
    # so a single-node cluster (and the tests) still places all of them.
    spread {
      attribute = "${node.unique.id}"
    }

    # A stopping allocation is first removed from Consul, then left running
    # for this long, then signalled. nginx's upstream list is rendered from
    # Consul (about a second behind, see edge.nomad.hcl), so by the time the
    # gateway closes its listeners and WebSockets nginx no longer sends it
    # new connections: the clients it drops reconnect to a live replica.
    shutdown_delay = "5s"

    network {
      port "http" {}
      port "internal" {}
    }

    restart {
      attempts = 5
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    service {
      provider = "consul"
      name     = "gateway"
      port     = "http"
      tags     = ["slicehub", "release-${var.release}"]

      meta {
        alloc_id = "${NOMAD_ALLOC_ID}"
        release  = var.release
      }

      # What nginx routes on: only passing instances are rendered into its
      # upstream, and the update block waits for it.
      check {
        name     = "gateway ready"
        type     = "http"
        path     = "/readyz"
        interval = "2s"
        timeout  = "1s"
      }

      # Liveness only: a wedged process is restarted. /readyz must not be
      # the restart trigger, or a PostgreSQL blip would restart every
      # replica at once.
      check {
        name     = "gateway alive"
        type     = "http"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    # The bootstrap listener, for the edge's private server only.
    service {
      provider = "consul"
      name     = "gateway-internal"
      port     = "internal"
      tags     = ["slicehub"]

      check {
        name     = "gateway internal ready"
        type     = "http"
        path     = "/readyz"
        interval = "2s"
        timeout  = "1s"
      }
    }

    task "gateway" {
      # raw_exec runs the binary as built. In production the docker driver
      # is the better default (the image pins the binary, and the task gets
      # its own filesystem):
      #
      #   driver = "docker"
      #   config {
      #     image        = var.gateway_image        # slicehub/gateway:<hash>
      #     args         = ["serve"]
      #     network_mode = "host"                   # binds NOMAD_ADDR_* below
      #   }
      driver = "raw_exec"

      config {
        command = var.gateway_binary
        args    = ["serve"]
      }

      # SIGTERM makes `slicehub serve` drain: listeners closed, WebSockets
      # ended with 1001 (clients reconnect through nginx to another
      # replica), requests in flight given up to 10 s. 20 s leaves room for
      # the scheduler and the database pool to close after that, and stays
      # under the client's max_kill_timeout (30 s by default).
      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      # The secrets, from the Nomad Variable nomad/jobs/gateway, which only
      # this job's tasks (and operators with ACL rights) can read; Nomad
      # encrypts it at rest. Each item is an environment variable of
      # `slicehub serve` under its own name: DATABASE_URL, and as needed
      # STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, NOMAD_TOKEN,
      # CONSUL_HTTP_TOKEN. The file lands in secrets/ (private to the task)
      # and is read into the environment at start; nothing secret is in the
      # job itself. nomadVar blocks until the variable exists, so a replica
      # waits for its secrets instead of starting without a database.
      #
      # change_mode = "noop": a rotated secret is applied by the next roll
      # (re-run the job with a new release), one replica at a time. A
      # "restart" here would restart every replica at once.
      template {
        destination = "secrets/gateway.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/gateway" }}{{ range $k, $v := . }}
        {{ $k }}={{ $v | toJSON }}{{ end }}{{ end }}
        EOT
      }

      # var.settings, one line each. (The comment line keeps the template
      # non-empty when there are none, which Nomad requires.)
      template {
        destination = "local/settings.env"
        env         = true
        change_mode = "noop"
        data        = join("\n", concat(["# the job's settings variable"], [for k, v in var.settings : "${k}=${jsonencode(v)}"]))
      }

      env {
        # Each replica binds the allocation's own address and ports.
        SLICEHUB_ADDR          = "${NOMAD_ADDR_http}"
        SLICEHUB_INTERNAL_ADDR = "${NOMAD_ADDR_internal}"
        SLICEHUB_BOOTSTRAP_URL = var.bootstrap_url

        CONSUL_HTTP_ADDR = var.consul_addr
        NOMAD_ADDR       = var.nomad_addr

        SLICEHUB_SLICE_DRIVER          = var.slice_driver
        SLICEHUB_SLICE_IMAGE           = var.slice_image
        SLICEHUB_SLICE_BINARY          = var.slice_binary
        SLICEHUB_SLICE_DB_HOST         = var.slice_db_host
        SLICEHUB_SLICE_SECCOMP_PROFILE = var.slice_seccomp_profile
        SLICEHUB_WA_URL                = var.wa_url
        SLICEHUB_WA_STANDIN            = var.wa_standin
        SLICEHUB_MIN_WARM              = var.min_warm
        SLICEHUB_MAX_SLICES            = var.max_slices
        SLICEHUB_RECONCILE_INTERVAL    = var.reconcile_interval
        SLICEHUB_DATACENTER            = split(",", var.datacenters)[0]

        SLICEHUB_TRUSTED_PROXIES = var.trusted_proxies
        SLICEHUB_ALLOWED_ORIGINS = var.allowed_origins
        SLICEHUB_COOKIE_SECURE   = var.cookie_secure

        SLICEHUB_LOG_LEVEL  = var.log_level
        SLICEHUB_LOG_FORMAT = "json"

        GOMAXPROCS = var.gomaxprocs
      }

      resources {
        cpu    = 500
        memory = var.memory_mb
      }

      logs {
        max_files     = 5
        max_file_size = 10
      }
    }
  }
}
