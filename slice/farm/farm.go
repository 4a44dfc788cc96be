// Package farm serves hundreds of slices from one process (`slice farm`),
// for the load run (package loadtest, `make load`).
//
// Why a farm: a real slice is a container with Chromium (about 400 MB and a
// good share of a core). 500 of them do not fit on the 2-core machines this
// runs on, and neither do 500 raw_exec slices (an executor and a logmon
// process each, about 50 MB) nor 500 Chromium-less containers. With
// `slicehub serve -slice-driver farm` every slice is a Nomad mock_driver
// allocation (jobs/slice-farm.nomad.hcl) that reserves a port and registers
// in Consul like a real one; the farm finds the allocations in Consul's
// catalog and runs, for each, the real slice runtime (package slice: the
// same handlers, gateway-token check, socket.io and CRM in the slice's own
// database) on that port, bootstrapping its credentials through the
// gateway's internal endpoint exactly as a real slice does. Only Chromium is
// left out: the WhatsApp state is set to "connected".
//
// It lives beside the slice runtime, not in package loadtest, so that the
// slice binary does not import the load run's package.
package farm

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
)

// Config configures a Farm.
type Config struct {
	// Consul is the agent whose catalog lists the slice allocations.
	Consul *consulapi.Client
	// Service is the Consul service of the slices (slicehub.ConsulService).
	Service string
	// PoolConns and PoolIdle bound each slice's database pool: hundreds of
	// slices share one PostgreSQL. Defaults: 1 connection, 30 s.
	PoolConns int32
	PoolIdle  time.Duration
	// NomadDataDirs are the data directories of the Nomad clients whose
	// allocations the farm serves: each allocation's workload identity is
	// in <dir>/alloc/<alloc id>/slice/secrets/nomad_token (the job's
	// identity { file = true }), and the gateway wants it at bootstrap.
	NomadDataDirs []string
	// Logger is the farm's logger; each slice logs through it at
	// SliceLogLevel (nil: warn; 500 slices' info lines say nothing new).
	Logger        *slog.Logger
	SliceLogLevel slog.Leveler
}

// Farm runs one slice.Slice per allocation of the slice job listed in
// Consul, and stops it when the allocation leaves the catalog.
type Farm struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	slices map[string]*farmSlice // by alloc id
	wg     sync.WaitGroup
}

type farmSlice struct {
	sliceID string
	addr    string
	cancel  context.CancelFunc
	done    chan struct{}
}

// New checks the configuration; Run does the work.
func New(cfg Config) (*Farm, error) {
	if cfg.Consul == nil {
		return nil, fmt.Errorf("slice farm: no Consul client")
	}
	if cfg.Service == "" {
		cfg.Service = slicehub.ConsulService
	}
	if cfg.PoolConns <= 0 {
		cfg.PoolConns = 1
	}
	if cfg.PoolIdle <= 0 {
		cfg.PoolIdle = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SliceLogLevel == nil {
		cfg.SliceLogLevel = slog.LevelWarn
	}
	return &Farm{cfg: cfg, log: cfg.Logger.With("component", "farm"), slices: map[string]*farmSlice{}}, nil
}

// Len is the number of slices the farm runs now.
func (f *Farm) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.slices)
}

// Run follows the catalog with one blocking query (never one watch per
// slice) until ctx ends, then stops every slice and returns.
func (f *Farm) Run(ctx context.Context) error {
	defer f.stopAll()
	var index uint64
	for ctx.Err() == nil {
		q := (&consulapi.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second}).WithContext(ctx)
		// The catalog, not the health endpoint: an allocation must be served
		// before its check can pass.
		entries, meta, err := f.cfg.Consul.Catalog().Service(f.cfg.Service, "", q)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			f.log.Warn("catalog query failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			index = 0
			continue
		}
		if meta.LastIndex < index {
			index = 0 // the index went backwards (agent restart): start over
		} else {
			index = meta.LastIndex
		}
		f.sync(ctx, entries)
	}
	return nil
}

// sync starts the allocations that are new and stops the ones that are gone.
func (f *Farm) sync(ctx context.Context, entries []*consulapi.CatalogService) {
	want := map[string]*consulapi.CatalogService{}
	for _, e := range entries {
		if alloc := e.ServiceMeta["alloc_id"]; alloc != "" {
			want[alloc] = e
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for alloc, fs := range f.slices {
		if _, ok := want[alloc]; !ok {
			fs.cancel()
			delete(f.slices, alloc)
			f.log.Info("allocation gone; slice stopped", "slice_id", fs.sliceID, "alloc_id", alloc)
		}
	}
	for alloc, e := range want {
		if _, ok := f.slices[alloc]; ok {
			continue
		}
		addr := e.ServiceAddress
		if addr == "" {
			addr = e.Address
		}
		addr = net.JoinHostPort(addr, strconv.Itoa(e.ServicePort))
		fs, err := f.start(ctx, e.ServiceMeta["slice_id"], alloc, addr, e.ServiceMeta["bootstrap_url"])
		if err != nil {
			// Logged once per catalog change; the next change retries.
			f.log.Error("cannot serve slice", "slice_id", e.ServiceMeta["slice_id"], "alloc_id", alloc, "addr", addr, "err", err)
			continue
		}
		f.slices[alloc] = fs
	}
}

// identityFile is where the allocation's workload identity is, or will be:
// under the Nomad client data directory that holds the allocation (Nomad
// writes the file as the task starts, which may be after the farm saw the
// service; the slice reads it at every bootstrap attempt). "" without data
// directories.
func (f *Farm) identityFile(allocID string) string {
	path := func(dir string) string {
		return filepath.Join(dir, "alloc", allocID, "slice", "secrets", "nomad_token")
	}
	for _, dir := range f.cfg.NomadDataDirs {
		if _, err := os.Stat(filepath.Join(dir, "alloc", allocID)); err == nil {
			return path(dir)
		}
	}
	if len(f.cfg.NomadDataDirs) > 0 {
		return path(f.cfg.NomadDataDirs[0])
	}
	return ""
}

// start runs one slice on addr, the port Nomad reserved for its allocation.
func (f *Farm) start(ctx context.Context, sliceID, allocID, addr, bootstrapURL string) (*farmSlice, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// Chromium is what the farm leaves out; the state it would drive is
	// set to what a linked session shows.
	state := slice.NewStateHolder()
	if err := state.Set(slicehub.WAConnected); err != nil {
		ln.Close()
		return nil, err
	}
	logger := slog.New(levelHandler{min: f.cfg.SliceLogLevel, Handler: f.cfg.Logger.Handler()})
	s, err := slice.New(slice.Config{
		Listener:     ln,
		SliceID:      sliceID,
		AllocID:      allocID,
		BootstrapURL: bootstrapURL,
		IdentityFile: f.identityFile(allocID),
		// No credentials cache: the farm holds them in memory for the
		// allocation's life, which is the farm's life.
		Pool:            slice.PoolLimits{MaxConns: f.cfg.PoolConns, IdleTime: f.cfg.PoolIdle},
		Snapshot:        slice.SnapshotPolicy{Disabled: true},
		ShutdownTimeout: 5 * time.Second,
		Logger:          logger.With("alloc_id", allocID),
		State:           state,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	fs := &farmSlice{sliceID: sliceID, addr: addr, cancel: cancel, done: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer close(fs.done)
		if err := s.Run(sctx); err != nil {
			f.log.Error("slice stopped", "slice_id", sliceID, "alloc_id", allocID, "err", err)
		}
	}()
	f.log.Info("serving slice", "slice_id", sliceID, "alloc_id", allocID, "addr", addr)
	return fs, nil
}

func (f *Farm) stopAll() {
	f.mu.Lock()
	for alloc, fs := range f.slices {
		fs.cancel()
		delete(f.slices, alloc)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// levelHandler drops records below min, so that each slice can log at a
// level of its own through the farm's handler.
type levelHandler struct {
	min slog.Leveler
	slog.Handler
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min.Level() && h.Handler.Enabled(ctx, l)
}

func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{min: h.min, Handler: h.Handler.WithAttrs(as)}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{min: h.min, Handler: h.Handler.WithGroup(name)}
}
