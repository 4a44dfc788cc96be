package slice_test

import (
	"testing"

	"github.com/slicehub/slicehub/testsupport"
)

// TestMain lets testsupport run the private PostgreSQL (and the agents, which
// this package does not use) for the integration tests, and always stop it.
func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }
