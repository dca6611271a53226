package cmd_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var bins struct {
	once       sync.Once
	dir        string
	switchyard string
	httpapp    string
	err        error
}

// build compiles the switchyard binary and the test app once per test run.
func build(t *testing.T) (switchyard, httpapp string) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "switchyard-e2e-")
		if bins.err != nil {
			return
		}
		bins.switchyard = filepath.Join(bins.dir, "switchyard")
		bins.httpapp = filepath.Join(bins.dir, "httpapp")
		for out, pkg := range map[string]string{bins.switchyard: "../cmd/switchyard", bins.httpapp: "../internal/testapps/httpapp"} {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			if b, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.switchyard, bins.httpapp
}

// issuedPorts are the ports freePort handed out in this test process: a
// port is free when asked for but bound later by another process, so the
// same one must not be handed out twice.
var issuedPorts sync.Map

func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, dup := issuedPorts.LoadOrStore(port, true); !dup {
			return port
		}
	}
	t.Fatal("no fresh free port")
	return 0
}

// proc is a started process with its output captured.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(name), p.output())
		}
	})
	return p
}

// startApp starts the test app on a free port and returns the port.
func startApp(t *testing.T, args ...string) (int, *proc) {
	t.Helper()
	_, app := build(t)
	port := freePort(t)
	p := start(t, nil, app, append([]string{"-addr", "127.0.0.1:" + strconv.Itoa(port)}, args...)...)
	waitFor(t, func() bool { return strings.Contains(p.output(), "listening on") }, "app to listen")
	return port, p
}

type sidecar struct {
	*proc
	http, grpc, internal, metrics, admin int
}

func (s *sidecar) url(path string) string { return "http://127.0.0.1:" + strconv.Itoa(s.http) + path }

// startSidecar starts switchyard with free ports; extra args are appended.
func startSidecar(t *testing.T, env []string, appID string, appPort int, extra ...string) *sidecar {
	t.Helper()
	bin, _ := build(t)
	s := &sidecar{http: freePort(t), grpc: freePort(t), metrics: freePort(t), admin: freePort(t)}
	args := []string{"--app-id", appID, "--dapr-http-port", strconv.Itoa(s.http), "--dapr-grpc-port", strconv.Itoa(s.grpc),
		"--metrics-port", strconv.Itoa(s.metrics), "--admin-port", strconv.Itoa(s.admin)}
	if appPort != 0 {
		args = append(args, "--app-port", strconv.Itoa(appPort))
	}
	s.proc = start(t, env, bin, append(args, extra...)...)
	return s
}

func waitReady(t *testing.T, s *sidecar) {
	t.Helper()
	waitFor(t, func() bool {
		r, err := http.Get(s.url("/v1.0/healthz"))
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusNoContent
	}, "sidecar healthz 204")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func do(t *testing.T, method, url string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func logLines(out string, substr string) []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}
