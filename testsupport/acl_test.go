package testsupport

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
)

// ACLs are on in every stack: without a token (what a slice has) Consul and
// Nomad refuse everything that matters, and the gateway's tokens allow what
// the gateway does and no more.
func TestACLsDenyWithoutATokenAndScopeTheGateway(t *testing.T) {
	st := Stack(t)
	consulAs := func(token string) *consulapi.Client {
		c, err := consulapi.NewClient(&consulapi.Config{Address: st.Consul.Addr, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	nomadAs := func(token string) *nomadapi.Client {
		c, err := nomadapi.NewClient(&nomadapi.Config{Address: st.Nomad.Addr, SecretID: token})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	reg := &consulapi.AgentServiceRegistration{ID: "acl-probe", Name: "slice", Address: "127.0.0.1", Port: 1,
		Meta: map[string]string{"slice_id": "1"}}
	anon, gw := consulAs(newUUID()), consulAs(st.ACL.ConsulGateway)
	// No token at all, as a slice has: plain HTTP, since the API clients
	// fall back to CONSUL_HTTP_TOKEN and NOMAD_TOKEN.
	anonymous := func(method, url, body string) int {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := anonymous("PUT", "http://"+st.Consul.Addr+"/v1/agent/service/register",
		`{"ID":"acl-probe","Name":"slice","Address":"127.0.0.1","Port":1,"Meta":{"slice_id":"1"}}`); code != http.StatusForbidden {
		t.Errorf("Consul answered %d to a registration without a token; want 403", code)
	}
	if err := gw.Agent().ServiceRegister(reg); err == nil {
		t.Error("the gateway's Consul token registered a service")
	}
	if _, err := anon.KV().Put(&consulapi.KVPair{Key: "slicehub/x", Value: []byte("1")}, nil); err == nil {
		t.Error("Consul wrote KV with an unknown token")
	}
	if _, err := gw.KV().Put(&consulapi.KVPair{Key: "slicehub/acl-probe", Value: []byte("1")}, nil); err != nil {
		t.Errorf("the gateway's Consul token cannot write its KV prefix: %v", err)
	}
	if _, err := gw.KV().Put(&consulapi.KVPair{Key: "other/acl-probe", Value: []byte("1")}, nil); err == nil {
		t.Error("the gateway's Consul token wrote outside its KV prefix")
	}
	if _, _, err := gw.Health().Service("slice", "", true, nil); err != nil {
		t.Errorf("the gateway's Consul token cannot read health: %v", err)
	}
	if _, _, err := gw.Session().Create(&consulapi.SessionEntry{TTL: "10s"}, nil); err != nil {
		t.Errorf("the gateway's Consul token cannot make a session: %v", err)
	}

	if code := anonymous("GET", st.Nomad.Addr+"/v1/jobs", ""); code != http.StatusForbidden {
		t.Errorf("Nomad answered %d to a job list without a token; want 403", code)
	}
	job := nomadapi.NewBatchJob("acl-probe", "acl-probe", "global", 50)
	job.Datacenters = []string{"dc1"}
	task := nomadapi.NewTask("t", "raw_exec").SetConfig("command", "/bin/true")
	job.AddTaskGroup(nomadapi.NewTaskGroup("g", 1).AddTask(task))
	if _, _, err := nomadAs(newUUID()).Jobs().Register(job, nil); err == nil {
		t.Error("Nomad registered a job with an unknown token")
	}
	gn := nomadAs(st.ACL.NomadGateway)
	if _, _, err := gn.Jobs().List(nil); err != nil {
		t.Errorf("the gateway's Nomad token cannot list jobs: %v", err)
	}
	if _, _, err := gn.Nodes().List(nil); err != nil {
		t.Errorf("the gateway's Nomad token cannot list nodes: %v", err)
	}
	if _, _, err := gn.ACLTokens().List(nil); err == nil {
		t.Error("the gateway's Nomad token lists ACL tokens")
	}
	if _, _, err := gn.Variables().Peek("nomad/jobs/other", nil); err == nil {
		t.Error("the gateway's Nomad token reads variables outside nomad/jobs/slice*")
	}
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
