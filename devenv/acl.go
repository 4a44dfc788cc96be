package devenv

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
)

// ACLs are on in every stack, `make run` and the tests alike: Consul with
// default deny, Nomad with ACLs enabled. A slice reaches neither without a
// token, and holds none. Each part holds the least it needs:
//
//   - each Consul agent: an agent token (its own node's catalog entry; without
//     it node sync breaks);
//   - Nomad, towards Consul: agent:read, node:read, service:write (it
//     registers and deregisters the tasks' services);
//   - the gateway, towards Consul: service:read and node_prefix read (health
//     results are filtered by node too), its KV prefix and sessions (the
//     scheduler's leader lock); towards Nomad: register, dispatch, read and
//     stop the slice job and its children, their logs and stats, node reads
//     and drains (the admin dashboard), and listing the variables every slice
//     can read (which must be none);
//   - operators, slicectl and the tests: management tokens.
//
// The secrets are generated once per state directory and kept in
// <dir>/acl.json (0600), so that `make run` keeps its tokens across restarts
// and Cleanup (the tests' watchdog) can still purge Nomad's jobs.
type ACL struct {
	ConsulManagement string `json:"consul_management"`
	ConsulAgent      string `json:"consul_agent"`
	ConsulNomad      string `json:"consul_nomad"`
	ConsulGateway    string `json:"consul_gateway"`
	NomadManagement  string `json:"nomad_management"`
	// NomadGateway is made by Nomad (1.6 does not take a chosen secret for
	// a client token); empty until then.
	NomadGateway string `json:"nomad_gateway"`
}

const aclFile = "acl.json"

// GatewayKVPrefix is the Consul KV prefix the gateway's token may write
// (the leader lock lives under it).
const GatewayKVPrefix = "slicehub/"

// Consul ACL policies, by name.
var consulPolicies = map[string]string{
	"slicehub-agent": `node_prefix "" { policy = "write" }
service_prefix "" { policy = "read" }`,
	"slicehub-nomad": `agent_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
service_prefix "" { policy = "write" }`,
	"slicehub-gateway": `service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
key_prefix "` + GatewayKVPrefix + `" { policy = "write" }
session_prefix "" { policy = "write" }`,
}

// nomadGatewayPolicy is the gateway's Nomad policy. submit-job is what
// registering the parameterized job and stopping children take; it lets the
// holder submit any job in the namespace (raw_exec included), which is why
// only the gateway holds it and slices hold nothing.
const nomadGatewayPolicy = `namespace "default" {
  capabilities = ["list-jobs", "parse-job", "read-job", "submit-job", "dispatch-job", "read-logs", "alloc-lifecycle"]
  variables {
    path "nomad/jobs/slice*" {
      capabilities = ["list"]
    }
  }
}
node {
  policy = "write"
}
# The slice job mounts the profiles host volume.
host_volume "slice-*" {
  policy = "write"
}
`

// loadACL reads dir's tokens, or makes and saves new ones.
func loadACL(dir string) (*ACL, error) {
	path := filepath.Join(dir, aclFile)
	a := &ACL{}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, a); err != nil {
			return nil, fmt.Errorf("%s: %w (delete it to make new tokens)", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	for _, p := range []*string{&a.ConsulManagement, &a.ConsulAgent, &a.ConsulNomad, &a.ConsulGateway, &a.NomadManagement} {
		if *p == "" {
			*p = newUUID()
		}
	}
	return a, a.save(dir)
}

func (a *ACL) save(dir string) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, aclFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, aclFile))
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// consulACLConfig is the acl block of a Consul agent: the server makes the
// management token from it; every agent gets its agent token.
func consulACLConfig(a *ACL, server bool) string {
	mgmt := ""
	if server {
		mgmt = fmt.Sprintf("    initial_management = %q\n", a.ConsulManagement)
	}
	return fmt.Sprintf(`acl {
  enabled                  = true
  default_policy           = "deny"
  down_policy              = "extend-cache"
  enable_token_persistence = false
  tokens {
%s    agent = %q
  }
}
`, mgmt, a.ConsulAgent)
}

// ensureConsulACL makes the policies and the tokens with the stack's
// secrets; what exists is kept. client carries the management token.
func ensureConsulACL(client *consulapi.Client, a *ACL) error {
	acl := client.ACL()
	// Listed, not read by name: Consul answers a missing policy with 403
	// "ACL not found", like a missing token.
	existing, _, err := acl.PolicyList(nil)
	if err != nil {
		return fmt.Errorf("consul policies: %w", err)
	}
	have := map[string]bool{}
	for _, p := range existing {
		have[p.Name] = true
	}
	for name, rules := range consulPolicies {
		if have[name] {
			continue
		}
		if _, _, err := acl.PolicyCreate(&consulapi.ACLPolicy{Name: name, Rules: rules}, nil); err != nil {
			return fmt.Errorf("consul policy %s: %w", name, err)
		}
	}
	for secret, policy := range map[string]string{a.ConsulAgent: "slicehub-agent", a.ConsulNomad: "slicehub-nomad", a.ConsulGateway: "slicehub-gateway"} {
		if _, _, err := acl.TokenReadSelf(&consulapi.QueryOptions{Token: secret}); err == nil {
			continue
		}
		_, _, err := acl.TokenCreate(&consulapi.ACLToken{SecretID: secret, Description: policy,
			Policies: []*consulapi.ACLTokenPolicyLink{{Name: policy}}}, nil)
		if err != nil {
			return fmt.Errorf("consul token %s: %w", policy, err)
		}
	}
	// The agent read its token from its configuration before the token
	// existed; setting it again makes it sync its node now rather than at
	// its next retry.
	_, err = client.Agent().UpdateAgentACLToken(a.ConsulAgent, nil)
	return err
}

// ensureNomadACL bootstraps Nomad's ACLs with the stack's management
// secret (once: a data directory that was bootstrapped keeps it) and makes
// the gateway's policy and token. client carries the management token. It
// reports whether a new gateway token was made (then a.save is due).
func ensureNomadACL(client *nomadapi.Client, a *ACL) (bool, error) {
	if _, _, err := client.ACLTokens().BootstrapOpts(a.NomadManagement, nil); err != nil &&
		!strings.Contains(err.Error(), "bootstrap already done") {
		return false, fmt.Errorf("nomad acl bootstrap: %w", err)
	}
	if _, err := client.ACLPolicies().Upsert(&nomadapi.ACLPolicy{Name: "slicehub-gateway",
		Description: "the gateway and its scheduler", Rules: nomadGatewayPolicy}, nil); err != nil {
		return false, fmt.Errorf("nomad policy: %w", err)
	}
	if a.NomadGateway != "" {
		if _, _, err := client.ACLTokens().Self(&nomadapi.QueryOptions{AuthToken: a.NomadGateway}); err == nil {
			return false, nil
		}
	}
	tok, _, err := client.ACLTokens().Create(&nomadapi.ACLToken{Name: "slicehub-gateway", Type: "client",
		Policies: []string{"slicehub-gateway"}}, nil)
	if err != nil {
		return false, fmt.Errorf("nomad gateway token: %w", err)
	}
	a.NomadGateway = tok.SecretID
	return true, nil
}

// savedNomadToken is the management token kept in dir, or "" (a directory
// from before ACLs, or none).
func savedNomadToken(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, aclFile))
	if err != nil {
		return ""
	}
	var a ACL
	if json.Unmarshal(b, &a) != nil {
		return ""
	}
	return a.NomadManagement
}

// EnvFile is the file in the state directory that WriteEnv writes.
const EnvFile = "env"

// WriteEnv writes <dir>/env (0600): shell KEY=value lines that point the
// Consul and Nomad CLIs, the Consul UI's login and scripts at this stack as
// an operator (management tokens), plus DATABASE_URL. `source` it.
func (s *Stack) WriteEnv(databaseURL string) (string, error) {
	vars := [][2]string{
		{"CONSUL_HTTP_ADDR", s.Consul.Addr},
		{"CONSUL_HTTP_TOKEN", s.ACL.ConsulManagement},
		{"NOMAD_ADDR", s.Nomad.Addr},
		{"NOMAD_TOKEN", s.ACL.NomadManagement},
		{"DATABASE_URL", databaseURL},
	}
	lines := []string{"# Written by `make run` (devenv): this stack's operator (management) tokens. source me."}
	names := make([]string, len(vars))
	for i, v := range vars {
		lines = append(lines, v[0]+"="+shellQuote(v[1]))
		names[i] = v[0]
	}
	// KEY=value lines (what env-file readers take), exported when sourced.
	lines = append(lines, "export "+strings.Join(names, " "))
	path := filepath.Join(s.Dir, EnvFile)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("devenv.write_env: %w", err)
	}
	return path, nil
}

// shellQuote quotes v for a POSIX shell.
func shellQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}
