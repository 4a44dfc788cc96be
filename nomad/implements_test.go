package nomad_test

import (
	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/telemetry"
)

// *nomad.Client implements what each consumer declares; none of them
// imports this package, so the check lives here.
var (
	_ scheduler.Nomad            = (*nomad.Client)(nil)
	_ scheduler.EventSource      = (*nomad.Client)(nil)
	_ scheduler.NodeDrainer      = (*nomad.Client)(nil)
	_ scheduler.IdentityVerifier = (*nomad.Client)(nil)
	_ telemetry.Nomad            = (*nomad.Client)(nil)
	_ admin.SliceLogs            = (*nomad.Client)(nil)
	_ admin.JobWaiter            = (*nomad.Client)(nil)
)
