package devenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The env file `make run` writes: KEY=value lines that a shell sources into
// exported variables, readable by the operator only, and the same tokens
// on the next start of the same directory.
func TestWriteEnvIsSourcedAndTokensAreKept(t *testing.T) {
	dir := t.TempDir()
	a, err := loadACL(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := loadACL(dir)
	if err != nil || *again != *a {
		t.Fatalf("tokens on the second start %+v, %v; want the first ones %+v", again, err, a)
	}
	s := &Stack{Dir: dir, ACL: a, Consul: &Consul{Addr: "127.0.0.1:8500"}, Nomad: &Nomad{Addr: "http://127.0.0.1:4646"}}
	path, err := s.WriteEnv("postgres://u:p@127.0.0.1:5432/slicehub?sslmode=disable&x=1")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || filepath.Base(path) != "env" {
		t.Fatalf("env file %s: %v, %v; want mode 0600", path, fi, err)
	}
	out, err := exec.Command("sh", "-c", ". "+path+` && sh -c 'echo "$CONSUL_HTTP_ADDR|$CONSUL_HTTP_TOKEN|$NOMAD_ADDR|$NOMAD_TOKEN|$DATABASE_URL"'`).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1:8500|" + a.ConsulManagement + "|http://127.0.0.1:4646|" + a.NomadManagement + "|postgres://u:p@127.0.0.1:5432/slicehub?sslmode=disable&x=1"
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("a child of a shell that sourced the file sees %q; want %q", got, want)
	}
}
