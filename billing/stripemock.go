package billing

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// stripe-mock, Stripe's stateless API double, for this package's tests and
// for the development platform (`slicehub dev` with no Stripe key).

// FindStripeMock returns the stripe-mock binary on PATH or where
// ops/stripe-mock.sh (run by `make tools`) installs it: GOBIN, or
// GOPATH/bin.
func FindStripeMock() (string, error) {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	if p := StripeMockInstallPath(); p != "" {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("stripe-mock is not installed (bash ops/stripe-mock.sh installs it)")
}

// StripeMockInstallPath is where `go install` puts stripe-mock ("" when go
// cannot say).
func StripeMockInstallPath() string {
	dir := goEnv("GOBIN")
	if dir == "" {
		if gopath := goEnv("GOPATH"); gopath != "" {
			dir = filepath.Join(filepath.SplitList(gopath)[0], "bin")
		}
	}
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, "stripe-mock")
}

func goEnv(name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// StartStripeMock starts the stripe-mock binary bin on free loopback ports
// and returns its HTTP URL and a function that stops it. It is killed with
// the calling process too, however that ends (Pdeathsig).
func StartStripeMock(ctx context.Context, bin string) (string, func(), error) {
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting stripe-mock: %w", err)
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Listening for HTTP at address: (\S+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a, stop, nil
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	stop()
	return "", nil, errors.New("stripe-mock did not start listening within 30 s")
}
