package nomad_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/testsupport"
)

// sleeper is a parameterized job shaped like the slice job (slice_id meta,
// one task) that runs sleep under raw_exec: real allocation stats, without
// building the slice binary.
const sleeper = `
job "sleeper" {
  type        = "batch"
  datacenters = ["dc1"]
  parameterized {
    meta_required = ["slice_id"]
  }
  group "slice" {
    task "sleep" {
      driver = "raw_exec"
      config {
        command = "/bin/sleep"
        args    = ["600"]
      }
      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
`

// TestClientReadsRealAllocationAndNodeStats runs against the test stack's
// real Nomad agent.
func TestClientReadsRealAllocationAndNodeStats(t *testing.T) {
	ctx := t.Context()
	log := testsupport.Logger(t)
	nc, err := nomad.New(testsupport.Stack(t).Nomad.Addr, log)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	nc.JobID = "slice-tel" + hex.EncodeToString(b)
	if err := nc.RegisterJob(ctx, sleeper, nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	jobID, err := nc.Dispatch(ctx, 5, 0)
	if err != nil {
		t.Fatalf("dispatch: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = nc.Stop(ctx, jobID, true)
		_ = nc.Stop(ctx, nc.JobID, true)
	})

	var alloc slicehub.SliceAlloc
	testsupport.Eventually(t, 2*time.Minute, "the sleeper's allocation running", func() (bool, error) {
		allocs, err := nc.SliceAllocs(ctx)
		if err != nil {
			return false, err
		}
		for _, a := range allocs {
			if a.SliceID == 5 {
				alloc = a
				return true, nil
			}
		}
		return false, nil
	})
	// The client's first stats come a collection period after the start.
	testsupport.Eventually(t, time.Minute, "memory in the allocation's stats", func() (bool, error) {
		u, err := nc.AllocUsage(ctx, alloc.AllocID)
		return err == nil && u.MemoryBytes > 0, nil
	})
	nodes, err := nc.NodeStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) == 0 || nodes[0].MemoryTotal <= 0 || nodes[0].MemoryUsed <= 0 || nodes[0].DiskTotal <= 0 {
		t.Fatalf("NodeStats = %+v; want the dev node with memory and disk", nodes)
	}
}
