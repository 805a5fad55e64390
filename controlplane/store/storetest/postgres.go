// Package storetest runs throwaway PostgreSQL clusters for tests of the
// control plane's store and of anything that runs control-plane replicas
// on a shared database.
//
// A cluster is a private postgres process started from the Debian server
// binaries (/usr/lib/postgresql/*/bin, package "postgresql") on a free
// loopback port, with its data in a temporary directory. It trusts every
// local connection, so it is for tests only. When the test process runs
// as root, the cluster runs as the "postgres" system user, since
// PostgreSQL refuses to run as root.
//
// Without the binaries the calling test is skipped, unless
// MEDGATE_REQUIRE_POSTGRES=1 is set, which makes it fail instead (for CI,
// where a skip would hide a missing install step). MEDGATE_PG_BIN names
// another directory holding initdb and postgres.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options tune a cluster. The zero value suits functional tests.
type Options struct {
	// Durable keeps fsync and synchronous commit on, as in production;
	// benchmarks of commit throughput want it. The default turns them off,
	// which is faster and loses nothing a test cares about.
	Durable bool
}

// Cluster is a running throwaway PostgreSQL cluster. Its methods are safe
// for concurrent use.
type Cluster struct {
	// Port is the TCP port on 127.0.0.1.
	Port int
	// SocketDir holds the cluster's unix socket.
	SocketDir string

	base    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	stop    sync.Once
	dbs     atomic.Int64
}

const superuser = "medgate"

// Postgres starts a cluster for tb and returns the URL of a new, empty
// database on it, of the form
// postgres://medgate@127.0.0.1:PORT/NAME?sslmode=disable, which pgx and
// the medgate binary accept. The cluster stops when tb's cleanup runs.
func Postgres(tb testing.TB) string {
	tb.Helper()
	return Start(tb, Options{}).NewDatabase(tb)
}

// Start starts a cluster for tb; it stops when tb's cleanup runs. Use one
// cluster with NewDatabase per test to save the few seconds each start
// takes.
func Start(tb testing.TB, opt Options) *Cluster {
	tb.Helper()
	bin := binDir(tb)
	c, err := start(bin, opt)
	if err != nil {
		tb.Fatalf("storetest: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("storetest: postgres log (tail):\n%s", c.logTail(4096))
		}
		c.Stop()
	})
	return c
}

// URL returns the URL of database db on the cluster.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, c.Port, db)
}

// SocketURL returns the URL of database db through the cluster's unix socket.
func (c *Cluster) SocketURL(db string) string {
	return fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d&sslmode=disable", superuser, db, c.SocketDir, c.Port)
}

// NewDatabase creates a new, empty database and returns its URL. The
// database goes with the cluster.
func (c *Cluster) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("medgate_%d", c.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		tb.Fatalf("storetest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("storetest: create database %s: %v", name, err)
	}
	return c.URL(name)
}

// Stop stops the cluster (a fast shutdown, then a kill after 10 seconds)
// and removes its files. It is safe to call more than once.
func (c *Cluster) Stop() {
	c.stop.Do(func() {
		if c.cmd != nil && c.cmd.Process != nil {
			c.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				c.cmd.Process.Kill()
				<-c.exited
			}
		}
		os.RemoveAll(c.base)
	})
}

func (c *Cluster) logTail(n int) string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// binDir finds the directory of initdb and postgres, or skips (or fails) tb.
func binDir(tb testing.TB) string {
	tb.Helper()
	where := "/usr/lib/postgresql/*/bin"
	dirs, _ := filepath.Glob(where)
	if d := os.Getenv("MEDGATE_PG_BIN"); d != "" {
		where, dirs = d+" (MEDGATE_PG_BIN)", []string{d}
	}
	var ok []string
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			ok = append(ok, d)
		}
	}
	if len(ok) == 0 {
		msg := "PostgreSQL server binaries (initdb, postgres) not found in " + where + ": install the Debian package postgresql (apt-get install postgresql)"
		if os.Getenv("MEDGATE_REQUIRE_POSTGRES") == "1" {
			tb.Fatal("storetest: " + msg + "; MEDGATE_REQUIRE_POSTGRES=1 makes this a failure")
		}
		tb.Skip("storetest: " + msg + "; set MEDGATE_REQUIRE_POSTGRES=1 to fail instead of skipping")
	}
	// The newest major version.
	sort.Slice(ok, func(i, j int) bool { return version(ok[i]) < version(ok[j]) })
	return ok[len(ok)-1]
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// runAs is the identity the cluster's processes run with: the postgres
// system user when this process is root, else this process's own.
type runAs struct {
	cred     *syscall.Credential
	uid, gid int
}

func identity() (runAs, error) {
	if os.Geteuid() != 0 {
		return runAs{uid: -1, gid: -1}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return runAs{}, fmt.Errorf("running as root, and PostgreSQL refuses to: no \"postgres\" user to run it as (%v); the postgresql package creates one", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return runAs{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, uid: uid, gid: gid}, nil
}

func (r runAs) command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = []string{"LC_ALL=C", "TZ=UTC", "PATH=/usr/bin:/bin"}
	if r.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	}
	return cmd
}

// ownedDir creates dir with mode 0700, owned by r.
func (r runAs) ownedDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if r.cred != nil {
		return os.Chown(dir, r.uid, r.gid)
	}
	return nil
}

func start(bin string, opt Options) (*Cluster, error) {
	who, err := identity()
	if err != nil {
		return nil, err
	}
	// A dedicated directory rather than testing's TempDir: TempDir's
	// parents are 0700 and owned by this process, so the postgres user
	// could not reach a data directory inside them.
	base, err := os.MkdirTemp("", "medgate-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{base: base, SocketDir: filepath.Join(base, "sock"), logPath: filepath.Join(base, "postgres.log")}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	if err := os.Chmod(base, 0o711); err != nil {
		return nil, err
	}
	if who.cred != nil {
		if err := reachable(base); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(base, "data")
	for _, d := range []string{data, c.SocketDir} {
		if err := who.ownedDir(d); err != nil {
			return nil, err
		}
	}
	var out bytes.Buffer
	initdb := who.command(base, filepath.Join(bin, "initdb"),
		"-D", data, "-U", superuser, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	initdb.Stdout, initdb.Stderr = &out, &out
	if err := initdb.Run(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out.String())
	}

	for attempt := 0; ; attempt++ {
		err := c.launch(who, bin, data, opt)
		if err == nil {
			break
		}
		// Another process may have taken the port between our probe and
		// postgres binding it.
		if !errors.Is(err, errExited) || attempt == 2 {
			return nil, fmt.Errorf("%v\npostgres log:\n%s", err, c.logTail(4096))
		}
	}
	ok = true
	return c, nil
}

var errExited = errors.New("postgres exited during startup")

func (c *Cluster) launch(who runAs, bin, data string, opt Options) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-k", c.SocketDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=100",
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning"}
	if !opt.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := who.command(c.base, filepath.Join(bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a ^C to the test reaches the test first
	// and the cleanup shuts the cluster down in order.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	orphanSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	url := fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", superuser, port)
	for {
		select {
		case <-exited:
			return errExited
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			conn.Close(ctx)
			cancel()
			c.cmd, c.exited, c.Port = cmd, exited, port
			return nil
		}
		cancel()
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("postgres did not accept connections within 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// reachable checks that every parent of dir lets others search it, so the
// postgres user can reach its data directory.
func reachable(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the postgres user cannot reach %s: %s has mode %04o; point TMPDIR at a directory all users can search",
				dir, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
