// Package pgtest starts a throwaway PostgreSQL cluster from the server
// binaries installed on the machine (initdb, pg_ctl) for tests that need a
// real database: a fresh data directory in a temporary directory, a
// loopback port, password authentication on TCP. When the tests run as
// root the cluster runs as the unprivileged "postgres" user (PostgreSQL
// refuses root). Without the binaries the tests skip, except under CI=true
// where they fail: CI must run them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	// Root is the temporary directory holding data and socket.
	Root string
	// Port is the loopback TCP port.
	Port int
	// User and Password are the superuser's credentials.
	User, Password string
	bin            string
	runAs          *user.User
}

// binDirs are where Debian and other distributions install the server.
var binDirs = []string{"/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin", "/usr/local/pgsql/bin", "/usr/bin"}

// ErrNoServer: no PostgreSQL server binaries on this machine.
var ErrNoServer = errors.New("pgtest: no PostgreSQL server binaries (initdb, pg_ctl, postgres)")

func findBin() (string, error) {
	if d := os.Getenv("PGTEST_BIN"); d != "" {
		binDirs = append([]string{d}, binDirs...)
	}
	for _, d := range binDirs {
		ok := true
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				ok = false
			}
		}
		if ok {
			return d, nil
		}
	}
	return "", ErrNoServer
}

// Start initialises and starts a cluster. Stop removes it.
func Start() (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "meshguard-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{Root: root, User: "meshguard", Password: randHex(12), bin: bin}
	fail := func(err error) (*Cluster, error) {
		os.RemoveAll(root)
		return nil, err
	}
	if os.Geteuid() == 0 {
		if c.runAs, err = user.Lookup("postgres"); err != nil {
			return fail(fmt.Errorf("pgtest: running as root needs an unprivileged postgres user: %w", err))
		}
		uid, _ := strconv.Atoi(c.runAs.Uid)
		gid, _ := strconv.Atoi(c.runAs.Gid)
		if err := os.Chmod(root, 0o755); err != nil {
			return fail(err)
		}
		if err := os.Chown(root, uid, gid); err != nil {
			return fail(err)
		}
	}
	pwfile := filepath.Join(root, "pw")
	if err := os.WriteFile(pwfile, []byte(c.Password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if c.runAs != nil {
		uid, _ := strconv.Atoi(c.runAs.Uid)
		gid, _ := strconv.Atoi(c.runAs.Gid)
		os.Chown(pwfile, uid, gid)
	}
	if out, err := c.run("initdb", "-D", c.data(), "-U", c.User, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C"); err != nil {
		return fail(fmt.Errorf("pgtest: initdb: %w\n%s", err, out))
	}
	if c.Port, err = freePort(); err != nil {
		return fail(err)
	}
	if err := c.startServer(); err != nil {
		return fail(err)
	}
	return c, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) data() string { return filepath.Join(c.Root, "data") }

// run runs a server binary, as the postgres user when we are root.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.runAs != nil {
		cmd = exec.Command("runuser", append([]string{"-u", c.runAs.Username, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.Root
	return cmd.CombinedOutput()
}

func (c *Cluster) startServer() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", c.Port, c.Root)
	if out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.Root, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Root, "log"))
		return fmt.Errorf("pgtest: pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return nil
}

// StopServer stops the server (fast shutdown) but keeps its data.
func (c *Cluster) StopServer() error {
	if out, err := c.run("pg_ctl", "-D", c.data(), "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// StartServer starts a stopped server again on the same port.
func (c *Cluster) StartServer() error { return c.startServer() }

// Stop stops the server and removes its files.
func (c *Cluster) Stop() {
	c.StopServer()
	os.RemoveAll(c.Root)
}

// URL is the connection URL of database db as the superuser.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", c.User, c.Password, c.Port, db)
}

// CreateDatabase creates a fresh database and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer conn.Close(ctx)
	name := "t_" + randHex(6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	return c.URL(name), nil
}

var (
	shared    *Cluster
	sharedErr error
	once      sync.Once
)

// Require returns the package's shared cluster, starting it on first use;
// it skips the test when no server is installed, and fails it under CI.
// Main stops it.
func Require(t testing.TB) *Cluster {
	t.Helper()
	once.Do(func() { shared, sharedErr = Start() })
	if sharedErr != nil {
		if errors.Is(sharedErr, ErrNoServer) && os.Getenv("CI") != "true" {
			t.Skip(sharedErr.Error() + " (under CI=true this fails)")
		}
		t.Fatal(sharedErr)
	}
	return shared
}

// Database is Require plus a fresh database for this test.
func Database(t testing.TB) (*Cluster, string) {
	t.Helper()
	c := Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, err := c.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, url
}

// Main runs the tests and then stops the shared cluster if one started.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	return code
}

// Exists reports whether a PostgreSQL server is installed (for messages).
func Exists() bool { _, err := findBin(); return err == nil }
