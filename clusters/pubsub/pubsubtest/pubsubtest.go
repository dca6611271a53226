// Package pubsubtest starts real brokers (redis-server, nats-server) for
// tests: each on a free port on 127.0.0.1 with its data in a t.TempDir(),
// ready when the helper returns, stopped in t.Cleanup. When the binary is
// missing the test is skipped, or fails when the CI environment variable is
// set.
package pubsubtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
)

// StartTimeout bounds how long a broker may take to become ready.
const StartTimeout = 15 * time.Second

// StartRedis starts redis-server with AOF persistence and returns its
// address (host:port). restart stops it gracefully and starts it again on
// the same port and data directory (the data survive); stop stops it
// (called again by t.Cleanup, harmless).
func StartRedis(t testing.TB) (addr string, restart func(), stop func()) {
	t.Helper()
	bin := lookPath(t, "redis-server")
	dir := t.TempDir()
	port := FreePort(t)
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := &process{
		t: t, name: "redis-server", bin: bin, dir: dir,
		args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--dir", dir},
		ready: func() error {
			return probe(addr, "PING\r\n", "+PONG")
		},
	}
	p.start()
	t.Cleanup(p.stop)
	return addr, p.restart, p.stop
}

// StartNATS starts nats-server with JetStream and file storage and returns
// its URL (nats://127.0.0.1:port). restart and stop as for StartRedis;
// streams, consumers and unacknowledged messages survive a restart.
func StartNATS(t testing.TB) (url string, restart func(), stop func()) {
	t.Helper()
	bin := lookPath(t, "nats-server")
	dir := t.TempDir()
	port := FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := &process{
		t: t, name: "nats-server", bin: bin, dir: dir,
		args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "js")},
		// nats-server enables JetStream (and recovers its store) before it
		// accepts clients, so the INFO line means JetStream is ready.
		ready: func() error { return probe(addr, "", "INFO ") },
	}
	p.start()
	t.Cleanup(p.stop)
	return "nats://" + addr, p.restart, p.stop
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pubsubtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every few milliseconds until it is true or the timeout
// passes, then fails the test with msg.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lookPath(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pubsubtest: %s not installed (required in CI): %v", name, err)
		}
		t.Skipf("pubsubtest: %s not installed: %v", name, err)
	}
	return bin
}

type process struct {
	t     testing.TB
	name  string
	bin   string
	dir   string
	args  []string
	ready func() error

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	runs   int
}

func (p *process) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runs++
	logPath := filepath.Join(p.dir, fmt.Sprintf("%s.%d.log", p.name, p.runs))
	logf, err := os.Create(logPath)
	if err != nil {
		p.t.Fatalf("pubsubtest: %v", err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.t.Fatalf("pubsubtest: start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	p.cmd, p.exited = cmd, exited

	deadline := time.Now().Add(StartTimeout)
	for {
		err := p.ready()
		if err == nil {
			return
		}
		select {
		case <-exited:
			p.cmd = nil
			p.t.Fatalf("pubsubtest: %s exited before it was ready: %s", p.name, tail(logPath))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			p.cmd = nil
			p.t.Fatalf("pubsubtest: %s not ready after %v (%v): %s", p.name, StartTimeout, err, tail(logPath))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *process) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

func (p *process) restart() {
	p.t.Helper()
	p.stop()
	p.start()
}

// probe dials addr, optionally sends req, and expects a reply line starting
// with want.
func probe(addr, req, want string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if req != "" {
		if _, err := c.Write([]byte(req)); err != nil {
			return err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, want) {
		return errors.New("unexpected reply " + strconv.Quote(line))
	}
	return nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// NewBroker builds a broker of typ through the registry, as a component
// would, after checking md as at config load; it is closed when the test ends.
func NewBroker(t testing.TB, typ string, md map[string]string) pubsub.Broker {
	t.Helper()
	f, ok := pubsub.Get(typ)
	if !ok {
		t.Fatalf("%s not registered", typ)
	}
	if v, ok := f.(pubsub.MetadataValidator); ok {
		if err := v.ValidateMetadata(md); err != nil {
			t.Fatal(err)
		}
	}
	b, err := f.New(context.Background(), pubsub.Options{Name: "pubsub", AppID: "app", Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
