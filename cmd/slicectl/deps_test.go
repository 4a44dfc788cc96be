package main

import (
	"os/exec"
	"strings"
	"testing"
)

// maxDeps bounds the packages outside the standard library and this module
// that slicectl links (issue 18: under 40). It was 53 while slicectl ran
// the goose migrations itself; now `slicehub migrate` does.
const maxDeps = 40

// forbidden are modules of the server that the CLI must never link: the
// HTTP stack, the Nomad and Consul APIs, Prometheus, and the migrations'
// goose (the daemon's).
var forbidden = []string{
	"github.com/gofiber/fiber",
	"github.com/valyala/fasthttp",
	"github.com/hashicorp/nomad",
	"github.com/hashicorp/consul",
	"github.com/prometheus/",
	"github.com/pressly/goose",
}

// TestSlicectlLinksOnlyWhatItCalls lists slicectl's dependencies with
// `go list -deps` and checks their number and that none is the server's.
func TestSlicectlLinksOnlyWhatItCalls(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("SKIP: `go` is not on PATH, so slicectl's dependencies cannot be listed (%v)", err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	var deps []string
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/slicehub/slicehub" || strings.HasPrefix(p, "github.com/slicehub/slicehub/") {
			continue
		}
		deps = append(deps, p)
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				t.Errorf("slicectl links %s (module %s is the server's, not the CLI's)", p, f)
			}
		}
	}
	if len(deps) >= maxDeps {
		t.Errorf("slicectl links %d packages outside the standard library and this module, want under %d:\n%s",
			len(deps), maxDeps, strings.Join(deps, "\n"))
	}
	t.Logf("slicectl links %d packages outside the standard library and this module", len(deps))
}
