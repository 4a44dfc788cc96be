# nginx at the edge: TLS termination, the shared SPA, and the proxy to the
# healthy gateway replicas, whose list Nomad renders from Consul (the
# `template` block is consul-template) and reloads on every change.
#
#   nomad var put nomad/jobs/edge tls_cert=@/etc/slicehub/tls/fullchain.pem tls_key=@/etc/slicehub/tls/privkey.pem
#   nomad job run -var "nginx_conf=$(cat ops/nginx/slicehub.conf.ctmpl)" \
#     -var server_name=app.example.com -var public_network=public \
#     -var spa_dir=/srv/slicehub/spa jobs/edge.nomad.hcl
#
# jobs/README.md ("The gateway and the edge") explains each block.

variable "nginx_conf" {
  type        = string
  description = "The nginx configuration template: the contents of ops/nginx/slicehub.conf.ctmpl. Passed in rather than read from disk because a job parsed through Nomad's API cannot read files, and the client's template sandbox only reads inside the allocation."
}

variable "nginx_binary" {
  type    = string
  default = "/usr/sbin/nginx"
}

variable "nginx_user" {
  type        = string
  default     = "www-data"
  description = "User of the worker processes when the master runs as root (raw_exec under a root Nomad client). Empty: nginx's compiled-in default."
}

variable "datacenters" {
  type    = string
  default = "dc1"
}

variable "count" {
  type        = number
  default     = 1
  description = "Edge instances. More than one needs something in front that spreads clients over them (DNS, a cloud load balancer); static ports allow one instance per node."
}

variable "https_port" {
  type    = number
  default = 443
}

variable "http_port" {
  type        = number
  default     = 80
  description = "Plain HTTP: redirects to HTTPS, and serves /edge-healthz."
}

variable "internal_port" {
  type        = number
  default     = 8081
  description = "The private bootstrap listener: the gateway job's bootstrap_url is http://<this node's private address>:<internal_port>."
}

variable "public_network" {
  type        = string
  default     = "default"
  description = "Client host_network the public ports (https, http) bind to. \"default\" is the client's network_interface (loopback on a development machine); in production, a host_network \"public\" declared on the edge nodes. The internal port always stays on the default, private, network."
}

variable "server_name" {
  type    = string
  default = "_"
}

variable "spa_dir" {
  type        = string
  default     = ""
  description = "Directory (on the client host) of the shared SPA's build, served under /app/. Empty: /app/ goes to the gateway like every other path."
}

job "edge" {
  type        = "service"
  datacenters = split(",", var.datacenters)

  group "edge" {
    count = var.count

    update {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "5s"
      healthy_deadline = "1m"
      auto_revert      = true
    }

    # Static ports: browsers and DNS know 443, and slices keep bootstrap_url
    # for life.
    network {
      port "https" {
        static       = var.https_port
        host_network = var.public_network
      }
      port "http" {
        static       = var.http_port
        host_network = var.public_network
      }
      port "internal" {
        static = var.internal_port
      }
    }

    service {
      provider = "consul"
      name     = "edge"
      port     = "http"
      tags     = ["slicehub"]

      check {
        name     = "edge alive"
        type     = "http"
        path     = "/edge-healthz"
        interval = "5s"
        timeout  = "1s"
      }
    }

    task "nginx" {
      # raw_exec runs the nginx from the host's packages (Debian's here). In
      # production the official image works the same way: driver "docker",
      # image "nginx:1.22", network_mode "host", the same args, and the
      # rendered files mounted where the template puts them.
      driver = "raw_exec"

      config {
        command = var.nginx_binary
        # The prefix and the configuration live in the task directory; the
        # master stays in the foreground so that Nomad supervises it.
        args = ["-p", "${NOMAD_TASK_DIR}/", "-c", "${NOMAD_TASK_DIR}/nginx.conf", "-e", "stderr", "-g", "daemon off;"]
      }

      # SIGQUIT is nginx's graceful stop: it finishes requests in flight.
      kill_signal  = "SIGQUIT"
      kill_timeout = "15s"

      env {
        SLICEHUB_EDGE_SERVER_NAME = var.server_name
        SLICEHUB_EDGE_SPA_DIR     = var.spa_dir
        SLICEHUB_EDGE_USER        = var.nginx_user
      }

      # The configuration, with the upstreams rendered from Consul. On every
      # change nginx gets SIGHUP: it checks the new file and, only if it is
      # valid, starts new workers with it while the old ones finish their
      # connections. wait: render at most once a second (a deploy changes
      # the set several times in a row) and at least within 3 s; the 5 s
      # minimum of the client's default would leave nginx sending new
      # connections to a replica that is shutting down.
      template {
        destination   = "local/nginx.conf"
        data          = var.nginx_conf
        change_mode   = "signal"
        change_signal = "SIGHUP"
        splay         = "0s"

        wait {
          min = "500ms"
          max = "3s"
        }
      }

      # The certificate and key, from the Nomad Variable nomad/jobs/edge
      # (readable by this job only, encrypted at rest), into secrets/,
      # which only this task can read. A renewed certificate is a `nomad var
      # put` away: nginx reloads with it, no deploy needed. The master reads
      # them as root before the workers drop privileges.
      template {
        destination   = "secrets/tls.crt"
        perms         = "0600"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = "{{ with nomadVar \"nomad/jobs/edge\" }}{{ .tls_cert }}{{ end }}"
      }
      template {
        destination   = "secrets/tls.key"
        perms         = "0600"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = "{{ with nomadVar \"nomad/jobs/edge\" }}{{ .tls_key }}{{ end }}"
      }

      resources {
        cpu    = 500
        memory = 128
      }

      logs {
        max_files     = 5
        max_file_size = 20
      }
    }
  }
}
