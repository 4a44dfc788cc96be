package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaultsAndEnv(t *testing.T) {
	env := map[string]string{"SLICEHUB_MIN_WARM": "3", "NOMAD_ADDR": "http://10.0.0.1:4646"}
	c, _, err := parseConfig("t", []string{"-max-slices", "7"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if c.MinWarm != 3 || c.MaxSlices != 7 || c.NomadAddr != "http://10.0.0.1:4646" || c.Addr != ":8080" {
		t.Errorf("got min_warm=%d max_slices=%d nomad=%q addr=%q; want 3, 7 (flag), the env's nomad and the default addr",
			c.MinWarm, c.MaxSlices, c.NomadAddr, c.Addr)
	}
	if c.ReconcileInterval != 10*time.Second {
		t.Errorf("reconcile interval = %s, want the 10s default", c.ReconcileInterval)
	}
}

func TestParseConfigRejectsBadValues(t *testing.T) {
	for _, args := range [][]string{
		{"-min-warm", "-1"},
		{"-min-warm", "many"},
		{"-reconcile-interval", "soon"},
		{"-slice-driver", "podman"},
		{"-cookie-secure", "perhaps"},
		{"-slice-memory-mb", "900", "-slice-memory-max-mb", "500"},
	} {
		if _, _, err := parseConfig("t", args, func(string) string { return "" }); err == nil {
			t.Errorf("parseConfig(%q) accepted a bad value", args)
		}
	}
}

// The README's configuration table must list every setting with its
// environment variable and default, so the documentation cannot drift.
func TestReadmeListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, s := range settings {
		row := "| `-" + s.Flag + "` | `" + s.Env + "` |"
		if !strings.Contains(readme, row) {
			t.Errorf("README lacks the row for -%s (%s)", s.Flag, s.Env)
			continue
		}
		line := readme[strings.Index(readme, row):]
		line = line[:strings.Index(line, "\n")]
		if s.Default != "" && !strings.Contains(line, "`"+s.Default+"`") {
			t.Errorf("README row for -%s does not show the default %q: %s", s.Flag, s.Default, line)
		}
	}
}

func TestRedactURL(t *testing.T) {
	got := redactURL("postgres://slicehub:s3cret@127.0.0.1:5432/slicehub")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "slicehub:***@127.0.0.1") {
		t.Errorf("redactURL = %q", got)
	}
}
