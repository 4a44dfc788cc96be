// Package consul owns what Slicehub reads from and writes to Consul: the
// route table (slice id -> healthy address), kept in memory by one blocking
// query on the slice service, and the leader lock that lets exactly one
// scheduler act at a time.
package consul

import (
	"log/slog"

	"github.com/hashicorp/consul/api"
	"github.com/slicehub/slicehub/internal/retryhttp"
)

// NewClient returns a Consul API client for addr (host:port or a URL) whose
// HTTP transport retries through go-retryablehttp.
func NewClient(addr string, log *slog.Logger) (*api.Client, error) {
	return NewClientWithToken(addr, "", log)
}

// NewClientWithToken is NewClient with an ACL token; "" keeps
// CONSUL_HTTP_TOKEN's.
func NewClientWithToken(addr, token string, log *slog.Logger) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	if token != "" {
		cfg.Token, cfg.TokenFile = token, ""
	}
	cfg.HttpClient = retryhttp.New(log, retryhttp.Options{})
	return api.NewClient(cfg)
}
