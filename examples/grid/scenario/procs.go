package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// procs starts child processes and guarantees they are stopped: the demo must
// clean up everything it started, even when a step fails.
type procs struct {
	mu   sync.Mutex
	list []*proc
	dir  string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs bin with args, stdout and stderr going to <dir>/<name>.log.
func (p *procs) start(ctx context.Context, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(p.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pr := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		f.Close()
		close(pr.done)
	}()
	p.mu.Lock()
	p.list = append(p.list, pr)
	p.mu.Unlock()
	return pr, nil
}

// stopAll sends SIGTERM to every child (its process group), waits up to the
// grace period, then kills what is left.
func (p *procs) stopAll(grace time.Duration) {
	p.mu.Lock()
	list := append([]*proc(nil), p.list...)
	p.list = nil
	p.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		pr := list[i]
		if pr.cmd.Process != nil {
			_ = syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.After(grace)
	for _, pr := range list {
		select {
		case <-pr.done:
		case <-deadline:
			_ = syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGKILL)
			<-pr.done
		}
	}
}

// exited reports whether the process has ended, with its log tail.
func (pr *proc) exited() error {
	select {
	case <-pr.done:
		return fmt.Errorf("%s exited (%v); log:\n%s", pr.name, pr.err, tail(pr.log, 40))
	default:
		return nil
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	n := 0
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n++
			if n > lines {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls url until it answers 200, the process dies, or the timeout ends.
func waitReady(ctx context.Context, client *http.Client, url string, pr *proc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if pr != nil {
			if err := pr.exited(); err != nil {
				return err
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("not ready")
			}
			name := url
			if pr != nil {
				name = pr.name + " (" + url + ")"
				return fmt.Errorf("%s not ready after %s: %v; log:\n%s", name, timeout, err, tail(pr.log, 40))
			}
			return fmt.Errorf("%s not ready after %s: %w", name, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
