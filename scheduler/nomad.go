package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/nomad/api"
	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/internal/retryhttp"
)

// Nomad is what the scheduler needs from Nomad. NomadClient implements it
// over github.com/hashicorp/nomad/api; tests of pure pool logic may replace it.
type Nomad interface {
	// Dispatch starts a child of the parameterized slice job. A repeated call
	// with the same token returns the existing child instead of a second one.
	Dispatch(ctx context.Context, sliceID int64, token string) (jobID string, err error)
	// Children lists the dispatched children of the slice job.
	Children(ctx context.Context) ([]Child, error)
	// Alloc returns one allocation; KindNotFound when Nomad does not know it.
	Alloc(ctx context.Context, allocID string) (Alloc, error)
	// Stop stops a child; purge also removes it from Nomad's state.
	Stop(ctx context.Context, jobID string, purge bool) error
}

// Child is one dispatched child of the slice job.
type Child struct {
	JobID   string
	SliceID int64 // from the dispatch meta; 0 if missing or malformed
	Status  string
	Stopped bool
}

// Alive reports whether the child is meant to run and has not finished.
func (c Child) Alive() bool { return !c.Stopped && c.Status != "dead" }

// Alloc is one allocation of a child.
type Alloc struct {
	ID           string
	JobID        string
	ClientStatus string
}

// NomadClient is the adapter over the Nomad HTTP API.
type NomadClient struct {
	API   *api.Client
	JobID string // the parameterized job, slicehub.NomadJobID by default
	log   *slog.Logger
}

// NewNomadClient returns an adapter for the agent at addr (http://host:port),
// with go-retryablehttp under the API client.
func NewNomadClient(addr string, log *slog.Logger) (*NomadClient, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	cfg.HttpClient = retryhttp.New(log.With("component", "nomad-http"), retryhttp.Options{})
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return &NomadClient{API: c, JobID: slicehub.NomadJobID, log: log.With("component", "nomad")}, nil
}

// RegisterJob parses an HCL2 job with variables on the server and registers
// it. The parameterized slice job is registered at every start, so the
// running definition always matches the gateway's version.
func (n *NomadClient) RegisterJob(ctx context.Context, hcl string, vars map[string]string) error {
	const op = "scheduler.register_job"
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, strconv.Quote(vars[k]))
	}
	jobs := n.API.Jobs()
	job, err := jobs.ParseHCLOpts(&api.JobsParseRequest{JobHCL: hcl, Variables: b.String(), Canonicalize: true})
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	if _, _, err := jobs.RegisterOpts(job, nil, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return nil
}

func (n *NomadClient) Dispatch(ctx context.Context, sliceID int64, token string) (string, error) {
	const op = "scheduler.dispatch"
	meta := map[string]string{slicehub.MetaSliceID: strconv.FormatInt(sliceID, 10)}
	resp, _, err := n.API.Jobs().Dispatch(n.JobID, meta, nil, "",
		(&api.WriteOptions{IdempotencyToken: token}).WithContext(ctx))
	if err != nil {
		return "", slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return resp.DispatchedJobID, nil
}

func (n *NomadClient) Children(ctx context.Context) ([]Child, error) {
	const op = "scheduler.children"
	stubs, _, err := n.API.Jobs().ListOptions(&api.JobListOptions{Fields: &api.JobListFields{Meta: true}},
		(&api.QueryOptions{Prefix: n.JobID + "/"}).WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := make([]Child, 0, len(stubs))
	for _, s := range stubs {
		if s.ParentID != n.JobID {
			continue
		}
		id, _ := slicehub.ParseSliceID(s.Meta[slicehub.MetaSliceID])
		out = append(out, Child{JobID: s.ID, SliceID: id, Status: s.Status, Stopped: s.Stop})
	}
	return out, nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (n *NomadClient) Alloc(ctx context.Context, allocID string) (Alloc, error) {
	const op = "scheduler.alloc"
	if !uuidRE.MatchString(allocID) {
		return Alloc{}, slicehub.Errorf(op, slicehub.KindNotFound, "alloc_not_found", "unknown allocation")
	}
	a, _, err := n.API.Allocations().Info(allocID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		var ue api.UnexpectedResponseError
		if asUnexpected(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return Alloc{}, slicehub.Errorf(op, slicehub.KindNotFound, "alloc_not_found", "unknown allocation")
		}
		return Alloc{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return Alloc{ID: a.ID, JobID: a.JobID, ClientStatus: a.ClientStatus}, nil
}

func (n *NomadClient) Stop(ctx context.Context, jobID string, purge bool) error {
	const op = "scheduler.stop"
	_, _, err := n.API.Jobs().Deregister(jobID, purge, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		var ue api.UnexpectedResponseError
		if asUnexpected(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return nil // already gone: stopping is idempotent
		}
		return slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return nil
}

func asUnexpected(err error, target *api.UnexpectedResponseError) bool {
	return errors.As(err, target)
}
