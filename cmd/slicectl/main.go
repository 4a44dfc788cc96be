// Command slicectl operates a Slicehub platform. See package ops.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/slicehub/slicehub/ops"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := ops.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
