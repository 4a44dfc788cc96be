package ops

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/slicehub/slicehub/testsupport"
)

// doctor names each missing part and exits 3. The full pass against a
// running platform is in cmd/slicehub (TestSlicectlAgainstThePlatform).
func TestDoctorFailsClearlyWhenPartsAreMissing(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	nomad, consul, dockerTCP := closed(), closed(), closed()
	// An empty, unmigrated database: PostgreSQL is there, the schema is not.
	url := testsupport.NewDatabase(t)
	var out, errb bytes.Buffer
	code := Execute(context.Background(), []string{"doctor", "--nomad-addr", "http://" + nomad, "--consul-addr", consul,
		"--database-url", url, "--docker-host", "tcp://" + dockerTCP, "--image", "slicehub/slice:x"}, &out, &errb)
	if code != ExitUnhealthy {
		t.Fatalf("doctor exit %d; want %d\n%s%s", code, ExitUnhealthy, out.String(), errb.String())
	}
	for _, want := range []string{
		"Nomad not reachable at http://" + nomad,
		"Consul not reachable at http://" + consul,
		"gateway schema missing (run `slicehub migrate`",
		"Docker not reachable at tcp://" + dockerTCP,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errb.String(), "5 of 5 checks failed: nomad, consul, postgresql, docker, image") {
		t.Errorf("stderr %q; want the failed checks named", errb.String())
	}
	if strings.Contains(out.String()+errb.String(), url) {
		t.Error("doctor printed the database URL with its password")
	}

	// Skipped checks do not fail; raw_exec needs no Docker.
	out.Reset()
	errb.Reset()
	code = Execute(context.Background(), []string{"doctor", "--skip", "nomad,consul", "--slice-driver", "raw_exec",
		"--database-url", url}, &out, &errb)
	if code != ExitUnhealthy || !strings.Contains(errb.String(), "1 of 5 checks failed: postgresql") {
		t.Errorf("doctor --skip: exit %d %q; want only postgresql failing", code, errb.String())
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want [2]int
		ok   bool
	}{
		{"1.6.1", [2]int{1, 6}, true}, {"v1.14.11", [2]int{1, 14}, true}, {"1.5.9", [2]int{1, 6}, false},
		{"2.0.0", [2]int{1, 14}, true}, {"15.18 (Debian 15.18-0+deb12u1)", [2]int{13, 0}, true},
		{"12.1", [2]int{13, 0}, false}, {"", [2]int{1, 0}, false}, {"1.10.0-beta1", [2]int{1, 9}, true},
	} {
		if got := versionAtLeast(c.v, c.want); got != c.ok {
			t.Errorf("versionAtLeast(%q, %v) = %v; want %v", c.v, c.want, got, c.ok)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{&APIError{Status: http.StatusNotFound}, ExitUnhealthy},
		{&APIError{Status: http.StatusBadRequest}, ExitUsage},
		{&APIError{Status: http.StatusConflict}, ExitError},
		{&APIError{Status: http.StatusUnauthorized}, ExitError},
		{usageErrorf("x"), ExitUsage},
	} {
		if got := ExitCode(c.err); got != c.want {
			t.Errorf("ExitCode(%v) = %d; want %d", c.err, got, c.want)
		}
	}
	var out, errb bytes.Buffer
	if code := Execute(context.Background(), []string{"no-such-command"}, &out, &errb); code != ExitUsage {
		t.Errorf("unknown command: exit %d; want %d", code, ExitUsage)
	}
	if code := Execute(context.Background(), []string{"slices", "show", "1", "--key", ""}, &out, &errb); code != ExitUsage ||
		!strings.Contains(errb.String(), "SLICEHUB_ADMIN_KEY") {
		t.Errorf("no key: exit %d %q; want %d naming SLICEHUB_ADMIN_KEY", code, errb.String(), ExitUsage)
	}
}
