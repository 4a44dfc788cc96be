// Command probe is the attacker's code of the hostile suite (package
// hostile): the test copies it into a running slice container and runs it
// there as the slice's own uid (docker exec -u), in the slice's network
// namespace and mounts. It reads a list of attempts as JSON on stdin, makes
// each one, and prints one JSON result per attempt on stdout. It judges
// nothing: the test decides which results are allowed.
//
// It is also the TEST-NET "internet" server: `probe serve ADDR` answers
// every HTTP request with "internet".
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Attempt is one thing the attacker tries.
type Attempt struct {
	Name string `json:"name"`
	// Kind: tcp (connect to Addr), udp-dns (a DNS query for Query to Addr),
	// http (Method URL, over the unix socket Unix when set, Body),
	// pg (log in with the URL in CredsFile, to Database when set), read
	// (open and read Path), list (read the directory Path), uid (report
	// the process's uid and capabilities).
	Kind      string `json:"kind"`
	Addr      string `json:"addr,omitempty"`
	Query     string `json:"query,omitempty"`
	Method    string `json:"method,omitempty"`
	URL       string `json:"url,omitempty"`
	Unix      string `json:"unix,omitempty"`
	Body      string `json:"body,omitempty"`
	CredsFile string `json:"creds_file,omitempty"`
	Database  string `json:"database,omitempty"`
	Path      string `json:"path,omitempty"`
	// TokenFile: an http attempt sends the file's content (when it
	// exists) as X-Nomad-Token: the task's workload identity, if the job
	// hands it over.
	TokenFile string `json:"token_file,omitempty"`
}

// Result: Reached means the attempt got through (a connection, an answer, a
// login, a read); Status is the HTTP status when there was one.
type Result struct {
	Name    string `json:"name"`
	Reached bool   `json:"reached"`
	Status  int    `json:"status,omitempty"`
	Detail  string `json:"detail"`
}

const timeout = 3 * time.Second

func main() {
	if len(os.Args) == 3 && os.Args[1] == "serve" {
		err := http.ListenAndServe(os.Args[2], http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "internet")
		}))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var attempts []Attempt
	if err := json.NewDecoder(os.Stdin).Decode(&attempts); err != nil {
		fmt.Fprintln(os.Stderr, "probe: reading attempts:", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	for _, a := range attempts {
		r := try(a)
		r.Name = a.Name
		_ = out.Encode(r)
	}
}

func try(a Attempt) Result {
	switch a.Kind {
	case "tcp":
		c, err := net.DialTimeout("tcp", a.Addr, timeout)
		if err != nil {
			return Result{Detail: err.Error()}
		}
		c.Close()
		return Result{Reached: true, Detail: "connected"}
	case "udp-dns":
		return dnsQuery(a.Addr, a.Query)
	case "http":
		return httpDo(a)
	case "pg":
		return pgLogin(a)
	case "read":
		b, err := os.ReadFile(a.Path)
		if err != nil {
			return Result{Detail: err.Error()}
		}
		return Result{Reached: true, Detail: fmt.Sprintf("read %d bytes", len(b))}
	case "list":
		es, err := os.ReadDir(a.Path)
		if err != nil {
			return Result{Detail: err.Error()}
		}
		names := make([]string, 0, len(es))
		for _, e := range es {
			names = append(names, e.Name())
		}
		return Result{Reached: true, Detail: strings.Join(names, ",")}
	case "uid":
		b, _ := os.ReadFile("/proc/self/status")
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			for _, k := range []string{"Uid:", "Gid:", "Groups:", "CapEff:", "CapPrm:", "NoNewPrivs:"} {
				if strings.HasPrefix(l, k) {
					keep = append(keep, strings.Join(strings.Fields(l), " "))
				}
			}
		}
		return Result{Reached: true, Detail: strings.Join(keep, "; ")}
	}
	return Result{Detail: "unknown kind " + a.Kind}
}

func httpDo(a Attempt) Result {
	tr := &http.Transport{}
	if a.Unix != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", a.Unix)
		}
	}
	client := &http.Client{Transport: tr, Timeout: timeout}
	method := a.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, a.URL, strings.NewReader(a.Body))
	if err != nil {
		return Result{Detail: err.Error()}
	}
	if a.TokenFile != "" {
		if tok, err := os.ReadFile(a.TokenFile); err == nil {
			req.Header.Set("X-Nomad-Token", strings.TrimSpace(string(tok)))
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	return Result{Reached: true, Status: resp.StatusCode, Detail: strings.TrimSpace(string(body))}
}

// pgLogin logs in with the slice's own credentials (the file the slice
// keeps in its secrets directory), optionally to another database.
func pgLogin(a Attempt) Result {
	b, err := os.ReadFile(a.CredsFile)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	var cached struct {
		Credentials struct {
			DatabaseURL string `json:"database_url"`
		} `json:"credentials"`
	}
	if err := json.Unmarshal(b, &cached); err != nil || cached.Credentials.DatabaseURL == "" {
		return Result{Detail: fmt.Sprintf("no database URL in %s: %v", a.CredsFile, err)}
	}
	u, err := url.Parse(cached.Credentials.DatabaseURL)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	if a.Database != "" {
		u.Path = "/" + a.Database
	}
	// pool_* settings are pgxpool's, which the slice uses; a single
	// connection would send them to the server as parameters.
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer conn.Close(context.Background())
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return Result{Detail: err.Error()}
	}
	return Result{Reached: true, Detail: "logged in to " + db + " at " + u.Host}
}

// dnsQuery sends one A query over UDP and reports whether any DNS answer
// came back.
func dnsQuery(addr, name string) Result {
	c, err := net.DialTimeout("udp", addr, timeout)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer c.Close()
	msg := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	msg = append(msg, 0, 0, 1, 0, 1)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return Result{Detail: err.Error()}
	}
	buf := make([]byte, 512)
	n, err := bufio.NewReader(c).Read(buf)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	if n < 12 || binary.BigEndian.Uint16(buf) != 0x1234 {
		return Result{Detail: "not a DNS answer"}
	}
	rcode := buf[3] & 0x0f
	answers := binary.BigEndian.Uint16(buf[6:])
	return Result{Reached: true, Detail: fmt.Sprintf("rcode %d, %d answers", rcode, answers)}
}
