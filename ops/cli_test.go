package ops

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }

// The migrations are the daemon's (`slicehub migrate`, tested in
// cmd/slicehub); the old command says so and fails as a usage error.
func TestDBMigrateSaysWhereItMoved(t *testing.T) {
	var out, errb bytes.Buffer
	root := NewRoot(&out, &errb)
	root.SetArgs([]string{"db", "migrate", "--database-url", "postgres://nowhere"})
	err := root.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "slicehub migrate") || ExitCode(err) != ExitUsage {
		t.Fatalf("slicectl db migrate: err %v (exit %d); want a usage error naming `slicehub migrate`", err, ExitCode(err))
	}
}
