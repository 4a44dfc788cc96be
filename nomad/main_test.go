package nomad_test

import (
	"testing"

	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }
