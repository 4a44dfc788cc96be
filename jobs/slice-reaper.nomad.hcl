# The profile reaper: deletes a retired slice's Chromium profile directory
# on every node that holds one. A parameterized sysbatch job, so that one
# dispatch runs once on each client node, wherever the slice ran (a drain
# leaves a copy on the old node too). The gateway registers it beside the
# slice job (docker driver) and its scheduler dispatches it when it retires
# a slice:
#
#   nomad job run -var image=slicehub/slice:<hash> -var profiles_dir=/srv/slicehub/profiles jobs/slice-reaper.nomad.hcl
#   nomad job dispatch -meta slice_id=42 slice-profile-reaper

variable "image" {
  type        = string
  description = "The slice image (it carries `slice reap-profile`)."
}

variable "profiles_dir" {
  type        = string
  default     = "/var/lib/slicehub/profiles"
  description = "The slice job's profiles_dir."
}

variable "datacenters" {
  type    = string
  default = "dc1"
}

job "slice-profile-reaper" {
  type        = "sysbatch"
  datacenters = split(",", var.datacenters)

  parameterized {
    meta_required = ["slice_id"]
    payload       = "forbidden"
  }

  group "reap" {
    # A failure (a node's disk) is retried a few times, then reported as a
    # failed allocation: the scheduler logs the dispatch, Nomad the result.
    restart {
      attempts = 3
      delay    = "5s"
      mode     = "fail"
    }

    task "reap" {
      driver = "docker"

      config {
        image        = var.image
        force_pull   = false
        network_mode = "none"
        # The root of the profiles: this platform job, and no slice, mounts
        # it. It runs only our own code with the id it is given.
        volumes    = ["${var.profiles_dir}:/profiles"]
        entrypoint = ["/usr/local/bin/slice", "reap-profile", "/profiles", "${NOMAD_META_slice_id}"]
        # Root with CHOWN only: each directory is made root's before it is
        # read and emptied (slice.RemoveProfile); no DAC_OVERRIDE.
        cap_drop     = ["all"]
        cap_add      = ["chown"]
        security_opt = ["no-new-privileges"]
        pids_limit   = 16
      }

      resources {
        cpu    = 50
        memory = 32
      }

      logs {
        max_files     = 1
        max_file_size = 1
      }
    }
  }
}
