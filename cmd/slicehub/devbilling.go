package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
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

// Billing on the development platform (`slicehub dev` with no Stripe key):
// billing runs against stripe-mock, started here, with the simulated
// payment side of billing.DevStripe (billing/devpayments.go) at
// /billing/dev.

const (
	devStripeKey   = "sk_test_slicehub_dev"
	devStripeState = "stripe-dev.json" // in the state directory
)

// devSecret is a random webhook signing secret for one run.
func devSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "whsec_dev_" + hex.EncodeToString(b[:])
}

// startStripeMock starts stripe-mock on a free loopback port and returns
// its URL and a stop function, or an error when it is not installed.
func startStripeMock(ctx context.Context) (string, func(), error) {
	bin, err := findStripeMock()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	// It dies with us even after a crash.
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

// findStripeMock looks where ops/stripe-mock.sh (run by `make tools`)
// installs it.
func findStripeMock() (string, error) {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	for _, env := range []string{"GOBIN", "GOPATH"} {
		out, err := exec.Command("go", "env", env).Output()
		dir := strings.TrimSpace(string(out))
		if err != nil || dir == "" {
			continue
		}
		if env == "GOPATH" {
			dir = filepath.Join(strings.Split(dir, string(os.PathListSeparator))[0], "bin")
		}
		if p := filepath.Join(dir, "stripe-mock"); isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New("stripe-mock is not installed (bash ops/stripe-mock.sh installs it)")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
