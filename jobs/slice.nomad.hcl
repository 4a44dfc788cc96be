# The slice job, docker driver: one parameterized batch job "slice"; every
# tenant slice is a dispatched child:
#
#   nomad job run -var image=slicehub/slice:<hash> -var bootstrap_url=http://<bridge address>:8081 -var network=slicehub-slices jobs/slice.nomad.hcl
#   nomad job dispatch -meta slice_id=42 slice
#
# jobs/README.md explains each block and the slice contract.

variable "image" {
  type        = string
  description = "Slice image, as printed by ops/image.sh (slicehub/slice:<12 hex>). Never a :latest tag: Nomad always pulls those, and no registry is reachable."
}

variable "bootstrap_url" {
  type        = string
  description = "Base URL of the gateway's internal listener; the slice POSTs to <bootstrap_url>/internal/v1/bootstrap."
}

variable "datacenters" {
  type        = string
  default     = "dc1"
  description = "Comma-separated datacenters (a string, so that callers can pass it like every other variable)."
}

# The reservations follow the capacity run's measurements (make capacity;
# typical weight profile, so "modelled"; 10 docker slices, 2026-12-07):
# cgroup anon 290-303 MiB (mean 296.5) + shmem 8.7 MiB per idle slice, idle
# CPU 0.014-0.034 cores (mean 0.020). The policy (jobs/README.md,
# "Reservations and oversubscription"):
#   memory_mb     = worst measured anon+shmem, 303 + 8.7 = 312 MiB, plus 15%
#                   headroom = 359, rounded to 360. Page cache (~310 MiB, most
#                   of it Chromium's binary, shared once per host on overlay2)
#                   is reclaimable and not reserved.
#   memory_max_mb = the hard limit, above the governor's default soft
#                   threshold (memory_soft_mb 1024) by 512 MiB, so that the
#                   governor restarts Chromium before the kernel kills it. A
#                   heavy account gets its own measured budget per dispatch
#                   (jobs/README.md: soft 2560, max 3840). Needs memory oversubscription (devenv enables it;
#                   production must).
#   cpu_mhz       = worst measured idle, 0.034 cores x 2600 MHz = 88 MHz,
#                   rounded up to 100: a weight under contention, never a cap.
variable "memory_mb" {
  type        = number
  default     = 360
  description = "Memory reservation, used for placement: measured typical anon+shmem (312 MiB, modelled) plus 15% headroom (jobs/README.md)."
}

variable "memory_max_mb" {
  type        = number
  default     = 1536
  description = "Hard memory limit: the heavy profile's governor soft threshold (1024 MiB) plus 512 MiB. Ignored by Nomad unless memory oversubscription is enabled in the scheduler configuration."
}

variable "cpu_mhz" {
  type        = number
  default     = 100
  description = "CPU share in MHz, sized from measured idle use (0.034 cores x 2600 MHz, rounded up): a weight under contention, not a cap."
}

variable "shm_size_mb" {
  type        = number
  default     = 256
  description = "Size of /dev/shm; Docker's 64 MB default makes Chromium's renderers crash."
}

variable "profiles_dir" {
  type        = string
  default     = "/var/lib/slicehub/profiles"
  description = "Directory on every client host holding Chromium profiles, one directory per slice id. Each slice mounts only <profiles_dir>/<slice id>, never the root (Docker volumes: the client's docker plugin needs volumes { enabled = true }; see jobs/README.md for what that costs)."
}

variable "network" {
  type        = string
  default     = "slicehub-slices"
  description = "Docker network the slices run on: a user-defined bridge with enable_icc=false and the firewall of jobs/README.md (devenv creates one per stack: devenv.SliceNet). \"host\" runs slices in the host's network namespace, where they reach every agent on the node: only for tests of the job's mechanics."
}

variable "uid_base" {
  type        = number
  default     = 1000000
  description = "Slice <id> runs as uid uid_base + id (slice/entrypoint.go). Above every host account."
}

variable "pids_limit" {
  type        = number
  default     = 1024
  description = "Processes and threads per slice (Chromium's 8-9 processes run a few hundred threads together): a fork bomb stops here."
}

variable "memory_soft_mb" {
  type        = number
  default     = 1024
  description = "The slice's memory governor threshold, MiB of anon+shmem in its own cgroup (slice/governor.go); 0: no governor. 1024: a typical slice's budget, 512 MiB under memory_max_mb (jobs/README.md). Job-wide default: a dispatch may override it with -meta memory_soft_mb=<MiB>."
}

variable "chromium_from_host" {
  type        = bool
  default     = false
  description = "Mount the host's /usr/lib/chromium read-only over the image's, so that Chromium's binary pages are shared across containers as overlay2 would share them (this machine's fuse-overlayfs does not). Host and image must carry the same Debian chromium package version (make capacity checks). Figures taken with it are modelled."
}

variable "wa_standin_weight" {
  type        = string
  default     = ""
  description = "The stand-in page's weight model: light, typical, heavy, or empty for none (slice/standin/README.md; figures taken with it are modelled). Job-wide default: a dispatch may override it with -meta wa_standin_weight=<profile>."
}

variable "log_max_files" {
  type        = number
  default     = 3
  description = "Log files kept per stream (stdout, stderr) in the allocation's log directory, written by the slice's entrypoint."
}

variable "log_max_file_mb" {
  type        = number
  default     = 5
  description = "Size, in MB, at which the slice's entrypoint starts the next log file."
}

variable "log_level" {
  type    = string
  default = "info"
}

variable "seccomp_profile" {
  type        = string
  default     = ""
  description = "Absolute path, on every Nomad client host, of the seccomp profile that lets Chromium's sandbox create its namespaces (ops/image.sh writes it to bin/chromium-seccomp.json; the image carries a copy). Empty: Docker's default profile, under which the sandbox cannot start."
}

variable "chromium_sandbox" {
  type        = bool
  default     = true
  description = "Run Chromium with its sandbox. It needs seccomp_profile; without it the slice reports the WhatsApp state failed and says why. false runs Chromium with --no-sandbox: only for a machine where the profile cannot be installed."
}

variable "wa_url" {
  type        = string
  default     = ""
  description = "The WhatsApp Web URL Chromium opens. Empty: the slice's default, https://web.whatsapp.com/. Tests point it at the stand-in page."
}

variable "wa_standin" {
  type        = bool
  default     = false
  description = "Serve the stand-in WhatsApp page inside the slice and open it instead of wa_url (development platform: no internet). POST /api/dev/scan then links it."
}

variable "whatsapp_down_after" {
  type        = string
  default     = "10m"
  description = "How long the WhatsApp check stays a warning while WhatsApp is disconnected before it turns critical: the gateway passes its -alert-whatsapp-down."
}

job "slice" {
  # A parameterized job must be a batch job. A batch task that exits 0 is
  # complete and never restarted: the slice exits 0 only when Nomad stops it.
  type        = "batch"
  datacenters = split(",", var.datacenters)

  parameterized {
    # The slice id is the only input; credentials never travel in meta or
    # payload (they are visible to anyone who can read the job).
    meta_required = ["slice_id"]
    payload       = "forbidden"
    # Per-dispatch overrides of the job-wide defaults in meta below (no
    # secret ever: meta is readable by anyone who may read the job).
    meta_optional = ["memory_soft_mb", "wa_standin_weight"]
  }

  # The defaults of the optional dispatch meta: a dispatch's own meta wins.
  meta {
    memory_soft_mb    = "${var.memory_soft_mb}"
    wa_standin_weight = var.wa_standin_weight
  }

  group "slice" {
    count = 1

    # Batch defaults give up (3 attempts in 24 h, then fail). mode = "delay"
    # never gives up: after 10 quick restarts in 30 min it waits for the
    # interval to pass and starts again. The scheduler decides when a slice
    # that keeps crashing is "failed", from Nomad's restart counts.
    restart {
      attempts = 10
      interval = "30m"
      # 1 s, not Nomad's 15 s or our first 5 s: a crashed slice is a
      # customer waiting, and the chaos suite measured a killed container
      # back in 8 s with 5 s here (target: under 5 s). Nomad adds up to 25%
      # jitter; the 10-attempt budget still stops a crash loop.
      delay = "1s"
      mode  = "delay"
    }

    # Rescheduling (a new allocation, possibly on another node) happens when
    # the node is lost or the allocation fails; never stop trying, but back
    # off so that a broken image does not spin the cluster.
    reschedule {
      # attempts = 0 is required: the batch default (1 in 24 h) combined
      # with unlimited is rejected as ambiguous.
      attempts       = 0
      unlimited      = true
      delay          = "10s"
      delay_function = "exponential"
      max_delay      = "5m"
    }

    network {
      # Dynamic: hundreds of slices share one host's port range. On the
      # bridge (var.network) the container listens on the same number, and
      # Docker publishes it on the node's address.
      port "http" {}
    }

    service {
      provider = "consul"
      name     = "slice"
      port     = "http"
      tags     = ["slicehub", "slice-${NOMAD_META_slice_id}"]
      # The node's address and the published port, never the container's
      # bridge address: the gateway and Consul reach slices on other nodes
      # too. (auto would advertise the container's address on a
      # user-defined network.)
      address_mode = "host"

      # The gateway's single blocking query on the service finds a slice by
      # this meta key.
      meta {
        slice_id = "${NOMAD_META_slice_id}"
        alloc_id = "${NOMAD_ALLOC_ID}"
      }

      check {
        name     = "slice health"
        type     = "http"
        path     = "/api/health"
        interval = "2s"
        timeout  = "1s"

        # A slice whose health stays critical (database gone, process wedged)
        # is restarted in place. The grace covers the bootstrap and the
        # migrations, during which /api/health answers 503 "starting".
        check_restart {
          limit           = 5
          grace           = "60s"
          ignore_warnings = false
        }
      }

      # WhatsApp's state for operators in the Consul UI: passing connected,
      # warning waiting for a QR scan or linking, critical disconnected past
      # whatsapp_down_after. Every 10 s: a state, not a liveness probe. It
      # never routes (the gateway's route table looks at "slice health"
      # only) and never restarts (no check_restart): a phone out of
      # coverage is no reason to restart Chromium.
      check {
        name     = "whatsapp"
        type     = "http"
        path     = "/api/health/whatsapp?down_after=${var.whatsapp_down_after}"
        interval = "10s"
        timeout  = "1s"
      }
    }

    task "slice" {
      driver = "docker"

      # On SIGTERM the slice closes Chromium (at most 8 s; it then flushes
      # Local Storage and cookies to the profile), saves the final profile
      # snapshot (at most 5 s) and, at the same time, drains HTTP and
      # socket.io (at most 10 s): 13 s at worst, under the 20 s here. Nomad
      # caps kill_timeout at the client's max_kill_timeout (30 s by default).
      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      config {
        image      = var.image
        force_pull = false

        # A network namespace of its own on a bridge without inter-container
        # traffic, behind the firewall of jobs/README.md: a slice reaches its
        # PostgreSQL, the bootstrap endpoint, DNS and the internet, and
        # nothing else (no other slice, no agent, no host service).
        network_mode = var.network
        ports        = var.network == "host" ? [] : ["http"]

        # Docker's init (tini) as PID 1: reaps Chromium's zombies. The image
        # also runs tini (as a subreaper), so it behaves the same outside
        # Nomad.
        init = true

        # In bytes.
        shm_size = var.shm_size_mb * 1024 * 1024

        # Docker's default seccomp profile plus the user, PID and network
        # namespaces Chromium's sandbox creates (see jobs/README.md). The
        # docker driver reads the file on the client host, at task start.
        #
        # no-new-privileges: no exec regains a capability or a setuid bit.
        security_opt = concat(["no-new-privileges"], var.seccomp_profile == "" ? [] : ["seccomp=${var.seccomp_profile}"])

        # The bounding set: what the entrypoint needs to give the profile to
        # the slice's uid and to drop to it (chown, setgid, setuid;
        # slice/entrypoint.go), and sys_chroot, which Chromium's sandbox
        # uses inside the user namespace it creates (a new user namespace
        # gets no capability outside the bounding set: without it the
        # zygote fails "sys_chroot(/proc/self/fdinfo/)"). After the drop
        # the slice's processes hold none of these in this namespace, and
        # no-new-privileges keeps exec from regaining any.
        #
        # kill: Docker's init (PID 1, root) forwards the stop signal to the
        # entrypoint, which runs as the slice's uid; without CAP_KILL that
        # fails ("[FATAL tini (1)] Unexpected error when forwarding signal:
        # 'Operation not permitted'"), the container ends at once and the
        # slice never shuts down gracefully (no Chromium close, no final
        # profile snapshot, no last log lines).
        cap_drop = ["all"]
        cap_add  = ["chown", "kill", "setgid", "setuid", "sys_chroot"]

        pids_limit = var.pids_limit

        # The slice's own profile directory, never the root of profiles_dir.
        # Docker creates it (as root) on first use; the entrypoint gives it
        # to the slice's uid, mode 0700.
        #
        # chromium_from_host: the host's Chromium directory, read-only, over
        # the image's (same package version, checked by make capacity): one
        # page cache for every container's binary pages, as overlay2's
        # shared lower layer gives (jobs/README.md).
        volumes = concat(["${var.profiles_dir}/${NOMAD_META_slice_id}:/profile"], var.chromium_from_host ? ["/usr/lib/chromium:/usr/lib/chromium:ro"] : [])
      }

      # The allocation's workload identity, written to
      # secrets/nomad_token: the slice proves with it, at its bootstrap,
      # that it is this allocation (the gateway has Nomad verify it). A
      # file, not the environment, which Chromium would inherit. It grants
      # nothing else: no policy names this job, and nothing is stored under
      # nomad/jobs/slice variables (the gateway refuses to start if
      # anything is).
      identity {
        env  = false
        file = true
      }

      env {
        SLICE_ID               = "${NOMAD_META_slice_id}"
        SLICEHUB_BOOTSTRAP_URL = var.bootstrap_url
        # Host networking: the allocation's address only, not every
        # interface of the host. Bridge: every address of the slice's own
        # namespace, where Docker's published port arrives.
        SLICE_ADDR        = var.network == "host" ? "${NOMAD_ADDR_http}" : "0.0.0.0:${NOMAD_PORT_http}"
        SLICE_PROFILE_DIR = "/profile"
        SLICE_UID_BASE    = var.uid_base
        SLICE_LOG_LEVEL   = var.log_level

        SLICE_CHROMIUM_SANDBOX = var.chromium_sandbox ? "on" : "off"
        SLICE_WA_STANDIN       = var.wa_standin ? "on" : "off"
        SLICE_WA_URL           = var.wa_standin ? "" : var.wa_url

        # From meta: the job-wide variables, or a dispatch's own.
        SLICE_MEMORY_SOFT_MB    = "${NOMAD_META_memory_soft_mb}"
        SLICE_WA_STANDIN_WEIGHT = "${NOMAD_META_wa_standin_weight}"

        # The entrypoint's own log rotation (the logs block below only
        # sizes Nomad's disk check).
        SLICE_LOG_MAX_FILES   = var.log_max_files
        SLICE_LOG_MAX_FILE_MB = var.log_max_file_mb
      }

      resources {
        cpu        = var.cpu_mhz
        memory     = var.memory_mb
        memory_max = var.memory_max_mb
      }

      # No logmon and no docker_logger (about 37 MB PSS per slice): with
      # logs disabled Nomad 1.6 starts neither (the docker driver skips its
      # logger when the task's output goes to /dev/null). The slice's
      # entrypoint writes its stdout and stderr itself to
      # alloc/logs/slice.<stream>.<n>, rotated with Nomad's naming, which
      # `nomad alloc logs` streams as before (slice/logrotate.go,
      # jobs/README.md). Nomad still checks these sizes against the disk.
      logs {
        disabled      = true
        max_files     = var.log_max_files
        max_file_size = var.log_max_file_mb
      }
    }
  }
}
