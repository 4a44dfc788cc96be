package devenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is the stack's private PostgreSQL server.
type Postgres struct {
	// URL connects as the superuser, over TCP with a password, to the
	// "postgres" database.
	URL  string
	Host string // 127.0.0.1
	// SliceHost is the address slices connect to (the slice network's
	// gateway, Options.SliceNetwork); empty without a slice network.
	SliceHost string
	Port      int
	User      string // superuser, "slicehub"
	Password  string
	DataDir   string
	// SocketDir holds the unix socket. It is inside the state directory, so
	// that two stacks never share /var/run/postgresql.
	SocketDir string

	proc *proc
}

// DatabaseURL is the superuser URL for another database on this server.
func (p *Postgres) DatabaseURL(database string) string {
	return pgURL(p.User, p.Password, p.Host, p.Port, database)
}

func pgURL(user, password, host string, port int, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// osUser is the account PostgreSQL runs as. The postmaster refuses to run
// as root, and we are usually root (Nomad's client needs it): then it is the
// OS user postgres. Anyone else runs it as themselves.
type osUser struct{ uid, gid uint32 }

// credential switches to u, or nil when u is who we are.
func (u osUser) credential() *syscall.Credential {
	if int(u.uid) == os.Geteuid() {
		return nil
	}
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{u.gid}}
}

func lookupPostgresUser() (osUser, error) {
	if os.Geteuid() != 0 {
		return osUser{uint32(os.Geteuid()), uint32(os.Getegid())}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return osUser{}, fmt.Errorf("PostgreSQL must run as the OS user postgres, which does not exist (%w); run `make tools`", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return osUser{uint32(uid), uint32(gid)}, nil
}

func startPostgres(ctx context.Context, s *Stack, bins binaries, port int, o Options) (*Postgres, error) {
	const op = "devenv.postgres"
	t0 := time.Now()
	pgUser, err := lookupPostgresUser()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	base := filepath.Join(s.Dir, "postgres")
	p := &Postgres{
		Host: "127.0.0.1", Port: port, User: superuser,
		DataDir: filepath.Join(base, "data"), SocketDir: filepath.Join(base, "run"),
	}
	if err := reachableBy(s.Dir, pgUser); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	for _, d := range []string{base, p.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if err := os.Chown(d, int(pgUser.uid), int(pgUser.gid)); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	pwPath := filepath.Join(base, "superuser.password")
	if _, err := os.Stat(filepath.Join(p.DataDir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		t0 := time.Now()
		if err := initdb(ctx, bins.initdb, p.DataDir, pwPath, pgUser, o.NoFsync); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		s.log.Info("initialized PostgreSQL data directory", "data", p.DataDir, "took", time.Since(t0).Round(time.Millisecond))
	}
	pw, err := os.ReadFile(pwPath)
	if err != nil {
		return nil, fmt.Errorf("%s: the data directory %s exists but its superuser password cannot be read (%w); delete %s to start over", op, p.DataDir, err, base)
	}
	p.Password = strings.TrimSpace(string(pw))
	p.URL = p.DatabaseURL("postgres")

	listen := "127.0.0.1"
	if sn := s.SliceNet; sn != nil {
		// Slices reach their databases on the bridge's address, with a
		// password (pg_hba.conf is rewritten at every start: the subnet is
		// Docker's choice), and through the firewall's one open port.
		listen += "," + sn.Gateway
		hba := filepath.Join(base, "pg_hba.conf")
		if err := writeHBA(hba, sn.Subnet, pgUser); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if err := sn.AllowHostPort(ctx, port); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		p.SliceHost = sn.Gateway
	}
	args := []string{
		"-D", p.DataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=" + listen,
		"-c", "unix_socket_directories=" + p.SocketDir,
		// Slices keep small pools of their own; the default 100 is reached
		// by a few dozen of them. `make load` runs 500+ slices of one
		// connection each (their health checks keep it open) beside the
		// gateway's pool.
		"-c", "max_connections=1000",
	}
	if s.SliceNet != nil {
		args = append(args, "-c", "hba_file="+filepath.Join(base, "pg_hba.conf"))
	}
	if err := writeFastSettings(p.DataDir, o.NoFsync, pgUser); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	pr, err := startProc(procSpec{
		name: "postgres", path: bins.postgres, args: args, dir: base,
		env:     []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"},
		logPath: filepath.Join(s.Dir, "logs", "postgres.log"),
		cred:    pgUser.credential(),
		stopSig: syscall.SIGINT, // "fast" shutdown: disconnect clients, checkpoint, exit
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	p.proc = pr
	if err := s.track(pr); err != nil {
		return p, fmt.Errorf("%s: %w", op, err)
	}
	// Ready means a real login over TCP with the password works, which is
	// what every user of the stack does next.
	if err := pr.waitReady(ctx, 100*time.Millisecond, func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(cctx, p.URL)
		if err != nil {
			return false, err
		}
		conn.Close(cctx)
		return true, nil
	}); err != nil {
		return p, fmt.Errorf("%s: not ready: %w", op, err)
	}
	s.log.Info("postgres ready", "pid", pr.pid, "took", time.Since(t0).Round(time.Millisecond))
	return p, nil
}

// initdb creates the cluster in a temporary directory and renames it into
// place, so that an interrupted initdb never leaves a half-made data
// directory that the next run would try to use.
func initdb(ctx context.Context, bin, dataDir, pwPath string, u osUser, noSync bool) error {
	// The password file may survive from an interrupted initdb; reuse it.
	if _, err := os.Stat(pwPath); errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		if err := os.WriteFile(pwPath, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
			return err
		}
	}
	// initdb, running as postgres, reads it.
	if err := os.Chown(pwPath, int(u.uid), int(u.gid)); err != nil {
		return err
	}
	tmp := dataDir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	args := []string{
		"-D", tmp,
		"-U", superuser,
		"--pwfile=" + pwPath,
		// Passwords everywhere, also on the unix socket: per-slice roles
		// must be really isolated, so no trust and no peer mapping.
		"--auth-host=scram-sha-256",
		"--auth-local=scram-sha-256",
		"-E", "UTF8",
		// C collation: no dependence on the locales installed here.
		"--locale=C",
		"--no-instructions",
	}
	if noSync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = filepath.Dir(dataDir)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.credential()}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return os.Rename(tmp, dataDir)
}

// reachableBy makes sure the OS user u can traverse into dir. Dir itself is
// ours and gets o+x if it lacks it (a mktemp directory is 0700); a parent
// we do not own is reported, not changed.
func reachableBy(dir string, u osUser) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		mode := st.Mode().Perm()
		ok := mode&0o001 != 0 ||
			(sys.Uid == u.uid && mode&0o100 != 0) ||
			(sys.Gid == u.gid && mode&0o010 != 0)
		if !ok {
			if d != dir {
				return fmt.Errorf("PostgreSQL runs as the OS user postgres, which cannot traverse %s: choose a state directory elsewhere or run chmod o+x %s", d, d)
			}
			if err := os.Chmod(d, mode|0o001); err != nil {
				return err
			}
		}
		if d == "/" || d == filepath.Dir(d) {
			return nil
		}
	}
}

// writeHBA writes the pg_hba.conf of a stack with a slice network: initdb's
// rules (passwords everywhere) plus the slices' subnet, also with a
// password. Only the server's own user reads it.
func writeHBA(path, subnet string, u osUser) error {
	conf := "# Written by devenv at every start; edits are lost.\n" +
		"local all all scram-sha-256\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n" +
		"host all all ::1/128 scram-sha-256\n" +
		"# This host's own addresses (a connection to the bridge's address from\n" +
		"# the host may leave with another source address).\n" +
		"host all all samehost scram-sha-256\n" +
		"# The slice network (devenv SliceNet): each slice logs in as its own role.\n" +
		"host all all " + subnet + " scram-sha-256\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	return os.Chown(path, int(u.uid), int(u.gid))
}

// fastSettings are what NoFsync turns off.
var fastSettings = []string{"fsync", "synchronous_commit", "full_page_writes"}

// writeFastSettings puts NoFsync's settings in postgresql.auto.conf (or
// takes them out), rather than on the command line: a command-line
// setting outranks every file, so ALTER SYSTEM could not lift it, and the
// scale test switches production settings on that way to time CREATE
// DATABASE under them. Other lines of the file are kept.
func writeFastSettings(dataDir string, noFsync bool, u osUser) error {
	path := filepath.Join(dataDir, "postgresql.auto.conf")
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var keep []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		key := strings.TrimSpace(strings.SplitN(strings.SplitN(line, "=", 2)[0], " ", 2)[0])
		if line == "" || slices.Contains(fastSettings, key) {
			continue
		}
		keep = append(keep, line)
	}
	if noFsync {
		for _, k := range fastSettings {
			keep = append(keep, k+" = 'off'")
		}
	}
	tmp := path + ".devenv"
	if err := os.WriteFile(tmp, []byte(strings.Join(keep, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Chown(tmp, int(u.uid), int(u.gid)); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
