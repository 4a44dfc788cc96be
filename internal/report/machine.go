package report

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Machine is what a report says about where it ran. Every field is read
// from the machine when the report is made, never typed in: a report moved
// to another machine must not keep the old one's facts.
type Machine struct {
	CPUs          int    // runtime.NumCPU: the CPUs this process may use
	CPUModel      string // /proc/cpuinfo "model name"
	MemoryGiB     float64
	Kernel        string // /proc/sys/kernel/osrelease
	DockerStorage string // docker info's storage driver, or why it is unknown
	LoadAvg       string // /proc/loadavg: the 1, 5 and 15 minute averages when read
	Go            string
}

// ReadMachine reads the machine's facts. A fact that cannot be read says
// so instead of being left out.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), CPUModel: "unknown", Kernel: "unknown", LoadAvg: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.Driver}}").Output(); err == nil {
		m.DockerStorage = strings.TrimSpace(string(out))
	} else {
		m.DockerStorage = "unknown (docker info: " + err.Error() + ")"
	}
	return m
}

// DurabilitySettings are the PostgreSQL settings that decide whether an
// acknowledged write survives a crash.
var DurabilitySettings = []string{"fsync", "synchronous_commit", "full_page_writes"}

// ReadPostgres reads, with SHOW, the server's version and its durability
// settings from the server at url.
func ReadPostgres(ctx context.Context, url string) (map[string]string, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("report: reading PostgreSQL's settings: %w", err)
	}
	defer conn.Close(context.Background())
	out := map[string]string{}
	for _, name := range append([]string{"server_version"}, DurabilitySettings...) {
		var v string
		if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&v); err != nil {
			return nil, fmt.Errorf("report: SHOW %s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}

// Durable reports whether every durability setting in pg is on.
func Durable(pg map[string]string) bool {
	for _, name := range DurabilitySettings {
		if pg[name] != "on" {
			return false
		}
	}
	return len(pg) > 0
}

// Environment appends the section every report carries: the machine's
// facts and PostgreSQL's settings as read during the run (pgErr when they
// could not be read, which the report then says).
func (r *Report) Environment(m Machine, pg map[string]string, pgErr error) {
	r.Printf("## Where this ran (read from the machine and the server during the run)\n\n")
	r.Printf("- CPUs: %d (%s); memory: %.1f GiB; kernel %s; Docker storage driver: %s; load average (1, 5, 15 min) when read: %s; %s.\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.DockerStorage, m.LoadAvg, m.Go)
	switch {
	case pgErr != nil:
		r.Printf("- PostgreSQL: its settings could not be read (%v), so this report cannot say whether its writes were durable.\n", pgErr)
	default:
		var parts []string
		for _, name := range DurabilitySettings {
			parts = append(parts, name+"="+pg[name])
		}
		r.Printf("- PostgreSQL %s: %s", pg["server_version"], strings.Join(parts, ", "))
		if Durable(pg) {
			r.Printf(" (production settings: an acknowledged commit is on disk).\n")
		} else {
			r.Printf(" — **not production settings**: an acknowledged commit may be lost in a crash, and writes cost less than in production.\n")
		}
	}
	r.Printf("\n")
}
