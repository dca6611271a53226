package cmd_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/switchyard-proxy/switchyard/internal/e2e"
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

func freePort(t *testing.T) int { return e2e.FreePort(t) }

type proc = e2e.Proc

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	return e2e.Start(t, env, name, args...)
}

// startApp starts the test app on a free port and returns the port.
func startApp(t *testing.T, args ...string) (int, *proc) {
	t.Helper()
	_, app := build(t)
	port := freePort(t)
	p := start(t, nil, app, append([]string{"-addr", "127.0.0.1:" + strconv.Itoa(port)}, args...)...)
	waitFor(t, func() bool { return strings.Contains(p.Output(), "listening on") }, "app to listen")
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
	e2e.WaitFor(t, cond, what)
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
