package devenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

// MissingBinaryError says which program is missing and how to get it. Tests
// fail with it rather than skip: a skipped integration test looks like a
// passing one.
type MissingBinaryError struct {
	Name     string
	Searched []string
}

func (e *MissingBinaryError) Error() string {
	return fmt.Sprintf("%s not found (looked in %s); run `make tools` (ops/tools.sh) from the repository root: it builds nomad and consul into ./bin and installs PostgreSQL",
		e.Name, strings.Join(e.Searched, ", "))
}

type binaries struct {
	nomad, consul    string
	initdb, postgres string
}

// CheckBinaries reports whether every program the options need can be
// found, with a *MissingBinaryError naming the first one that cannot.
func CheckBinaries(o Options) error {
	_, err := findBinaries(o)
	return err
}

func findBinaries(o Options) (binaries, error) {
	var b binaries
	var err error
	agentDirs := []string{o.BinDir}
	if o.BinDir == "" {
		agentDirs = nil
		if root := repoRoot(); root != "" {
			agentDirs = append(agentDirs, filepath.Join(root, "bin"))
		}
	}
	if b.nomad, err = lookIn("nomad", agentDirs, o.BinDir == ""); err != nil {
		return b, err
	}
	if b.consul, err = lookIn("consul", agentDirs, o.BinDir == ""); err != nil {
		return b, err
	}
	if o.SkipPostgres {
		return b, nil
	}
	pgDirs := []string{o.PostgresBinDir}
	if o.PostgresBinDir == "" {
		pgDirs = postgresBinDirs()
	}
	if b.initdb, err = lookIn("initdb", pgDirs, o.PostgresBinDir == ""); err != nil {
		return b, err
	}
	// postgres must come from the same installation as initdb.
	if b.postgres, err = lookIn("postgres", []string{filepath.Dir(b.initdb)}, false); err != nil {
		return b, err
	}
	return b, nil
}

// lookIn finds an executable in dirs, then on PATH when orPath.
func lookIn(name string, dirs []string, orPath bool) (string, error) {
	var searched []string
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		searched = append(searched, d)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if orPath {
		searched = append(searched, "PATH")
		if p, err := exec.LookPath(name); err == nil {
			return filepath.Abs(p)
		}
	}
	return "", &MissingBinaryError{Name: name, Searched: searched}
}

// postgresBinDirs lists Debian's /usr/lib/postgresql/<major>/bin, newest
// first; Debian keeps the server binaries off PATH.
func postgresBinDirs() []string {
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		return n
	}
	sort.Slice(ms, func(i, j int) bool { return major(ms[i]) > major(ms[j]) })
	return ms
}

const modulePath = "github.com/slicehub/slicehub"

// repoRoot finds the repository: up from the working directory (a package
// directory under `go test`, the repository under `make run`), else up from
// where this file was compiled (a test binary run from elsewhere; not with
// -trimpath).
func repoRoot() string {
	if wd, err := os.Getwd(); err == nil {
		if root := findUp(wd); root != "" {
			return root
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return findUp(filepath.Dir(file))
	}
	return ""
}

func findUp(dir string) string {
	for {
		if isRepo(filepath.Join(dir, "go.mod")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func isRepo(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == modulePath
		}
	}
	return false
}

// RepoRoot is the checkout's root directory, or "" when none is found.
func RepoRoot() string { return repoRoot() }
