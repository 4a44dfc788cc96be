// Package nomad owns the Nomad API (github.com/hashicorp/nomad/api): the
// client over go-retryablehttp, registering the slice job, dispatching its
// children and reading them back, allocations and nodes, a node's drain,
// workload identities, the event stream, allocation logs, and the
// allocation and node statistics telemetry samples. It also owns the format
// of a dispatched child's job ID ("<parent>/dispatch-s<slice>g<gen>-…",
// jobid.go): nobody else parses it.
//
// It is the only package outside cmd/, devenv/, testsupport/ and tests
// that imports the Nomad API. Its consumers declare the few methods they
// need (scheduler.Nomad, scheduler.NodeDrainer, telemetry.Nomad,
// admin.SliceLogs) and *Client implements them with the plain values of the
// root package (slicehub.Alloc, slicehub.SliceJob, ...), so that none of
// them imports this package and tests can replace Nomad where they need to.
package nomad

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/internal/retryhttp"
)

// PortLabel is the port every slice job names for its HTTP listener.
const PortLabel = "http"

// portAddr finds label's host address in what Nomad allocated.
func portAddr(r *api.AllocatedResources, label string) string {
	if r == nil {
		return ""
	}
	for _, p := range r.Shared.Ports {
		if p.Label == label && p.Value > 0 && p.HostIP != "" {
			return net.JoinHostPort(p.HostIP, strconv.Itoa(p.Value))
		}
	}
	for _, n := range r.Shared.Networks {
		if n == nil {
			continue
		}
		for _, p := range append(append([]api.Port{}, n.ReservedPorts...), n.DynamicPorts...) {
			if p.Label == label && p.Value > 0 && n.IP != "" {
				return net.JoinHostPort(n.IP, strconv.Itoa(p.Value))
			}
		}
	}
	return ""
}

// Client is the adapter over the Nomad HTTP API.
type Client struct {
	API *api.Client
	// JobID is the parameterized job, slicehub.NomadJobID by default.
	// RegisterJob registers under this ID, whatever the HCL names the job,
	// so that tests can run several pools side by side on one Nomad.
	JobID string
	// ReaperJobID is the profile reaper (jobs/slice-reaper.nomad.hcl), when
	// registered: ReapProfile dispatches it. Empty: slices keep their
	// profiles on retirement (raw_exec, farm).
	ReaperJobID string
	// StatsParallel bounds the statistics requests in flight (NodeStats):
	// each is forwarded by the server to a client, and hundreds at once
	// would queue there. Default 8.
	StatsParallel int
	log           *slog.Logger
}

// New returns an adapter for the agent at addr (http://host:port),
// with go-retryablehttp under the API client.
func New(addr string, log *slog.Logger) (*Client, error) {
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
	return &Client{API: c, JobID: slicehub.NomadJobID, log: log.With("component", "nomad")}, nil
}

// HostVolumePath is the path of the client host volume name, which every
// client that declares it must declare at the same path (a job names one
// path for all of them).
func (n *Client) HostVolumePath(ctx context.Context, name string) (string, error) {
	const op = "nomad.host_volume_path"
	q := (&api.QueryOptions{}).WithContext(ctx)
	nodes, _, err := n.API.Nodes().List(q)
	if err != nil {
		return "", slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	path := ""
	for _, stub := range nodes {
		node, _, err := n.API.Nodes().Info(stub.ID, q)
		if err != nil {
			return "", slicehub.Wrap(op, slicehub.KindUnavailable, err)
		}
		hv := node.HostVolumes[name]
		switch {
		case hv == nil:
		case path != "" && hv.Path != path:
			return "", slicehub.Errorf(op, slicehub.KindInvalid, "host_volume_paths", "host volume %s has two paths (%s, %s)", name, path, hv.Path)
		default:
			path = hv.Path
		}
	}
	if path == "" {
		return "", slicehub.Errorf(op, slicehub.KindNotFound, "no_host_volume", "no Nomad client declares host volume %s", name)
	}
	return path, nil
}

// RegisterJob parses an HCL2 job with variables on the server and registers
// it. The parameterized slice job is registered at every start, so the
// running definition always matches the gateway's version.
func (n *Client) RegisterJob(ctx context.Context, hcl string, vars map[string]string) error {
	return n.registerAs(ctx, hcl, vars, n.JobID)
}

// RegisterReaper registers the profile reaper (jobs.SliceReaper) as
// <JobID>-profile-reaper, beside the slice job, and makes ReapProfile
// dispatch it.
func (n *Client) RegisterReaper(ctx context.Context, hcl string, vars map[string]string) error {
	id := n.JobID + "-profile-reaper"
	if err := n.registerAs(ctx, hcl, vars, id); err != nil {
		return err
	}
	n.ReaperJobID = id
	return nil
}

// registerAs registers an HCL2 job under id (empty: the HCL's own).
func (n *Client) registerAs(ctx context.Context, hcl string, vars map[string]string, jobID string) error {
	const op = "nomad.register_job"
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
	if jobID != "" && (job.ID == nil || *job.ID != jobID) {
		id := jobID
		job.ID, job.Name = &id, &id
	}
	if _, _, err := jobs.RegisterOpts(job, nil, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return nil
}

func (n *Client) Dispatch(ctx context.Context, sliceID int64, gen int) (string, error) {
	const op = "nomad.dispatch"
	meta := map[string]string{slicehub.MetaSliceID: strconv.FormatInt(sliceID, 10)}
	resp, _, err := n.API.Jobs().Dispatch(n.JobID, meta, nil, dispatchPrefix(sliceID, gen),
		(&api.WriteOptions{IdempotencyToken: DispatchToken(sliceID, gen)}).WithContext(ctx))
	if err != nil {
		return "", slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return resp.DispatchedJobID, nil
}

// ReapProfile dispatches the profile reaper for retired slice sliceID: it
// runs once on every client node and deletes the slice's profile directory
// where there is one. Repeated calls while the first child exists return
// it (idempotency token). false: no reaper is registered.
func (n *Client) ReapProfile(ctx context.Context, sliceID int64) (bool, error) {
	const op = "nomad.reap_profile"
	if n.ReaperJobID == "" {
		return false, nil
	}
	meta := map[string]string{slicehub.MetaSliceID: strconv.FormatInt(sliceID, 10)}
	_, _, err := n.API.Jobs().Dispatch(n.ReaperJobID, meta, nil, fmt.Sprintf("s%d", sliceID),
		(&api.WriteOptions{IdempotencyToken: fmt.Sprintf("reap-profile-%d", sliceID)}).WithContext(ctx))
	if err != nil {
		return false, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return true, nil
}

func (n *Client) Children(ctx context.Context) ([]slicehub.SliceJob, error) {
	const op = "nomad.children"
	stubs, _, err := n.API.Jobs().ListOptions(&api.JobListOptions{Fields: &api.JobListFields{Meta: true}},
		(&api.QueryOptions{Prefix: n.JobID + "/"}).WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := make([]slicehub.SliceJob, 0, len(stubs))
	for _, s := range stubs {
		if s.ParentID != n.JobID {
			continue
		}
		c := parseChild(s.ID, s.Meta[slicehub.MetaSliceID], s.Status, s.Stop)
		c.SubmitTime = time.Unix(0, s.SubmitTime)
		out = append(out, c)
	}
	return out, nil
}

func (n *Client) Allocations(ctx context.Context) ([]slicehub.Alloc, error) {
	const op = "nomad.allocations"
	// resources=true adds what each allocation reserves; the task states
	// (restart counts) come with the stubs by default.
	q := &api.QueryOptions{Params: map[string]string{"resources": "true"}}
	stubs, _, err := n.API.Allocations().List(q.WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := make([]slicehub.Alloc, 0, len(stubs))
	for _, s := range stubs {
		out = append(out, allocFromStub(s))
	}
	return out, nil
}

func (n *Client) JobAllocations(ctx context.Context, jobID string) ([]slicehub.Alloc, error) {
	const op = "nomad.job_allocations"
	stubs, _, err := n.API.Jobs().Allocations(jobID, false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return nil, nil
		}
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := make([]slicehub.Alloc, 0, len(stubs))
	for _, s := range stubs {
		out = append(out, allocFromStub(s))
	}
	return out, nil
}

func allocFromStub(s *api.AllocationListStub) slicehub.Alloc {
	a := slicehub.Alloc{ID: s.ID, JobID: s.JobID, NodeID: s.NodeID, ClientStatus: s.ClientStatus, DesiredStatus: s.DesiredStatus,
		Addr: portAddr(s.AllocatedResources, PortLabel), CreateIndex: s.CreateIndex}
	for _, ts := range s.TaskStates {
		if ts != nil {
			a.Restarts += int(ts.Restarts)
		}
	}
	if r := s.AllocatedResources; r != nil {
		for _, t := range r.Tasks {
			if t == nil {
				continue
			}
			a.MemoryMB += t.Memory.MemoryMB
			a.CPU += t.Cpu.CpuShares
		}
		a.DiskMB += r.Shared.DiskMB
	}
	return a
}

func (n *Client) Nodes(ctx context.Context) ([]slicehub.ClusterNode, error) {
	const op = "nomad.nodes"
	q := &api.QueryOptions{Params: map[string]string{"resources": "true"}}
	stubs, _, err := n.API.Nodes().List(q.WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := make([]slicehub.ClusterNode, 0, len(stubs))
	for _, s := range stubs {
		nd := slicehub.ClusterNode{ID: s.ID, Name: s.Name, Drivers: map[string]bool{},
			Schedulable: s.Status == api.NodeStatusReady && s.SchedulingEligibility == api.NodeSchedulingEligible && !s.Drain}
		for name, d := range s.Drivers {
			if d != nil && d.Detected && d.Healthy {
				nd.Drivers[name] = true
			}
		}
		if r := s.NodeResources; r != nil {
			nd.MemoryMB = r.Memory.MemoryMB
			nd.CPU = r.Cpu.CpuShares
			nd.DiskMB = r.Disk.DiskMB
		}
		if r := s.ReservedResources; r != nil {
			nd.MemoryMB -= int64(r.Memory.MemoryMB)
			nd.CPU -= int64(r.Cpu.CpuShares)
			nd.DiskMB -= int64(r.Disk.DiskMB)
		}
		out = append(out, nd)
	}
	return out, nil
}

func (n *Client) SliceResources(ctx context.Context) (slicehub.SliceResources, error) {
	const op = "nomad.slice_resources"
	job, _, err := n.API.Jobs().Info(n.JobID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return slicehub.SliceResources{}, slicehub.Errorf(op, slicehub.KindNotFound, "job_not_registered", "the slice job %q is not registered", n.JobID)
		}
		return slicehub.SliceResources{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	var r slicehub.SliceResources
	for _, g := range job.TaskGroups {
		if g.EphemeralDisk != nil && g.EphemeralDisk.SizeMB != nil {
			r.DiskMB += int64(*g.EphemeralDisk.SizeMB)
		}
		for _, t := range g.Tasks {
			if r.Driver == "" {
				r.Driver = t.Driver
			}
			if t.Resources == nil {
				continue
			}
			if t.Resources.MemoryMB != nil {
				r.MemoryMB += int64(*t.Resources.MemoryMB)
			}
			if t.Resources.CPU != nil {
				r.CPU += int64(*t.Resources.CPU)
			}
		}
	}
	return r, nil
}

// identityClaims are the claims of a Nomad 1.6 workload identity.
type identityClaims struct {
	AllocID   string `json:"nomad_allocation_id"`
	JobID     string `json:"nomad_job_id"`
	Namespace string `json:"nomad_namespace"`
	Task      string `json:"nomad_task"`
}

// VerifyIdentity sends jwt as the token of a read of the variables its job
// may read (nomad/jobs/<job>): Nomad answers 403 for a token it did not
// sign or whose allocation is terminal, and 404 (nothing is stored there)
// or 200 for a live one. Only then are the claims, read without checking
// the signature (Nomad just did), trusted.
func (n *Client) VerifyIdentity(ctx context.Context, jwt string) (slicehub.WorkloadIdentity, error) {
	const op = "nomad.verify_identity"
	deny := slicehub.Errorf(op, slicehub.KindUnauthorized, "invalid_identity", "invalid workload identity")
	parts := strings.Split(jwt, ".")
	if len(jwt) > 8192 || len(parts) != 3 {
		return slicehub.WorkloadIdentity{}, deny
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return slicehub.WorkloadIdentity{}, deny
	}
	var c identityClaims
	if err := json.Unmarshal(raw, &c); err != nil || !uuidRE.MatchString(c.AllocID) || c.JobID == "" || c.Namespace == "" {
		return slicehub.WorkloadIdentity{}, deny
	}
	q := (&api.QueryOptions{AuthToken: jwt, Namespace: c.Namespace}).WithContext(ctx)
	if _, _, err := n.API.Variables().Peek("nomad/jobs/"+c.JobID, q); err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusForbidden {
			return slicehub.WorkloadIdentity{}, deny
		}
		return slicehub.WorkloadIdentity{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return slicehub.WorkloadIdentity{AllocID: c.AllocID, JobID: c.JobID, Namespace: c.Namespace, Task: c.Task}, nil
}

// EnforcesACLs asks Nomad for a variable with a token that exists nowhere:
// 403 when ACLs are on; without them Nomad answers as if it were valid.
func (n *Client) EnforcesACLs(ctx context.Context) (bool, error) {
	const op = "nomad.enforces_acls"
	b := make([]byte, 16)
	_, _ = cryptorand.Read(b)
	bogus := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	q := (&api.QueryOptions{AuthToken: bogus}).WithContext(ctx)
	if _, _, err := n.API.Variables().Peek("nomad/jobs/"+n.JobID, q); err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusForbidden {
			return true, nil
		}
		return false, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return false, nil
}

// ReadableVariables lists the Nomad variables that every allocation of the
// slice job can read through its workload identity: nomad/jobs/<job> and
// below (a dispatched child's identity names its parent). There must be
// none, or every tenant reads them.
func (n *Client) ReadableVariables(ctx context.Context) ([]string, error) {
	const op = "nomad.readable_variables"
	base := "nomad/jobs/" + n.JobID
	vars, _, err := n.API.Variables().PrefixList(base, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	var out []string
	for _, v := range vars {
		if v != nil && (v.Path == base || strings.HasPrefix(v.Path, base+"/")) {
			out = append(out, v.Path)
		}
	}
	return out, nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (n *Client) Alloc(ctx context.Context, allocID string) (slicehub.Alloc, error) {
	const op = "nomad.alloc"
	if !uuidRE.MatchString(allocID) {
		return slicehub.Alloc{}, slicehub.Errorf(op, slicehub.KindNotFound, "alloc_not_found", "unknown allocation")
	}
	a, _, err := n.API.Allocations().Info(allocID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return slicehub.Alloc{}, slicehub.Errorf(op, slicehub.KindNotFound, "alloc_not_found", "unknown allocation")
		}
		return slicehub.Alloc{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return slicehub.Alloc{ID: a.ID, JobID: a.JobID, NodeID: a.NodeID, ClientStatus: a.ClientStatus, DesiredStatus: a.DesiredStatus,
		Addr: portAddr(a.AllocatedResources, PortLabel), CreateIndex: a.CreateIndex}, nil
}

func (n *Client) Stop(ctx context.Context, jobID string, purge bool) error {
	const op = "nomad.stop"
	_, _, err := n.API.Jobs().Deregister(jobID, purge, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return nil // already gone: stopping is idempotent
		}
		return slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return nil
}

// Purge stops and purges every child of the parameterized job and the job
// itself, 16 at a time, and waits until none of their allocations holds
// a node: a test's teardown, or an operator removing a whole pool. Each
// child's deregistration goes through Consul, so thousands take minutes;
// ctx bounds the wait.
func (n *Client) Purge(ctx context.Context) error {
	cs, err := n.Children(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = n.Stop(ctx, c.JobID, true) // what failed shows in the wait below
		}()
	}
	wg.Wait()
	if err := n.Stop(ctx, n.JobID, true); err != nil {
		return err
	}
	tick := time.NewTicker(200 * time.Millisecond) // polling Nomad, not synchronisation
	defer tick.Stop()
	for {
		allocs, err := n.Allocations(ctx)
		if err != nil {
			return err
		}
		left := 0
		for _, a := range allocs {
			if strings.HasPrefix(a.JobID, n.JobID+"/") && a.Holds() && a.NodeID != "" {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return slicehub.Wrap("nomad.purge", slicehub.KindUnavailable, fmt.Errorf("%d allocations still hold nodes: %w", left, ctx.Err()))
		case <-tick.C:
		}
	}
}

// Events follows /v1/event/stream from the latest index, topics Job,
// Allocation and Node. A batch is relevant when it touches a child of the
// slice job (an allocation's first filter key is its job ID) or any node.
func (n *Client) Events(ctx context.Context) (<-chan slicehub.ClusterEvent, error) {
	const op = "nomad.events"
	topics := map[api.Topic][]string{api.TopicJob: {"*"}, api.TopicAllocation: {"*"}, api.TopicNode: {"*"}}
	in, err := n.API.EventStream().Stream(ctx, topics, 0, &api.QueryOptions{})
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := make(chan slicehub.ClusterEvent, 16)
	prefix := n.JobID + "/"
	go func() {
		defer close(out)
		for batch := range in {
			ev := slicehub.ClusterEvent{Index: batch.Index}
			if batch.Err != nil {
				ev.Err = slicehub.Wrap(op, slicehub.KindUnavailable, batch.Err)
			}
			for _, e := range batch.Events {
				switch e.Topic {
				case api.TopicNode:
					ev.Relevant = true
				case api.TopicJob:
					ev.Relevant = ev.Relevant || strings.HasPrefix(e.Key, prefix)
				case api.TopicAllocation:
					ev.Relevant = ev.Relevant || (len(e.FilterKeys) > 0 && strings.HasPrefix(e.FilterKeys[0], prefix))
				}
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
			if ev.Err != nil {
				return
			}
		}
	}()
	return out, nil
}
