// Package e2e holds what switchyard's end-to-end tests share: free ports
// that are never handed out twice, processes started with their output
// captured and killed at the end of the test, and polling with a deadline.
// It is imported by _test.go files only.
package e2e

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// issued are the ports FreePort handed out in this test process: a port is
// free when asked for but bound later by another process, so the same one
// must not be handed out twice.
var issued sync.Map

// FreePort returns a port on 127.0.0.1 that nothing listens on and that
// this process has not handed out before.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, dup := issued.LoadOrStore(port, true); !dup {
			return port
		}
	}
	t.Fatal("no fresh free port")
	return 0
}

// Proc is a started process with its output captured.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Done chan struct{} // closed when the process exited; Err is set then
	Err  error

	mu  sync.Mutex
	out bytes.Buffer
}

func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output returns what the process wrote so far (stdout and stderr).
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Kill kills the process and waits for it to exit.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.Done
}

// Start starts bin with args and env added to this process's environment.
// The process is killed when the test ends; its output is logged if the
// test failed.
func Start(t testing.TB, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: filepath.Base(bin), Cmd: exec.Command(bin, args...), Done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p, p
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.Err = p.Cmd.Wait(); close(p.Done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", p.Name, p.Output())
		}
	})
	return p
}

// WaitFor polls cond every 5 ms until it holds, and fails the test after
// 15 s.
func WaitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
