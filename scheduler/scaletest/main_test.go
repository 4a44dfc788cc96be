package scaletest_test

import (
	"os"
	"strconv"
	"testing"

	"github.com/slicehub/slicehub/testsupport"
)

// SLICEHUB_SCALE_NODE_MEMORY_MB makes each Nomad client advertise that much
// memory (devenv.Options.NomadClientMemoryMB): mock slices reserve Nomad's
// minimum of 10 MB each, so the host's real memory caps how many fit.
func TestMain(m *testing.M) {
	mem, _ := strconv.Atoi(os.Getenv("SLICEHUB_SCALE_NODE_MEMORY_MB"))
	// Fast PostgreSQL settings unless SLICEHUB_SCALE_DURABLE=1: 5,000
	// CREATE DATABASE with fsync on may not fit the run (the report says
	// which settings it ran with, and times CREATE DATABASE under them).
	testsupport.Main(m, testsupport.Options{NomadClients: 2, NomadClientMemoryMB: mem, Durable: os.Getenv("SLICEHUB_SCALE_DURABLE") == "1"})
}
