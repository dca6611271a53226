package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/internal/e2e"
)

// TestCustomBuild builds this main and the test app, and runs the custom
// sidecar twice: with no configuration file (the built-in defaults without
// the parts this build leaves out) and with the example switchyard.yaml,
// whose chain runs the headers filter written outside the project.
func TestCustomBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	bin, app := filepath.Join(dir, "custom-switchyard"), filepath.Join(dir, "httpapp")
	for out, pkg := range map[string]string{bin: ".", app: "../../internal/testapps/httpapp"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	appPort := e2e.FreePort(t)
	a := e2e.Start(t, nil, app, "-addr", "127.0.0.1:"+strconv.Itoa(appPort))
	e2e.WaitFor(t, func() bool { return strings.Contains(a.Output(), "listening on") }, "app")

	t.Run("defaults", func(t *testing.T) {
		httpPort := e2e.FreePort(t)
		p := e2e.Start(t, nil, bin, "--app-id", "orders", "--app-port", strconv.Itoa(appPort),
			"--dapr-http-port", strconv.Itoa(httpPort), "--dapr-grpc-port", strconv.Itoa(e2e.FreePort(t)),
			"--metrics-port", strconv.Itoa(e2e.FreePort(t)), "--admin-port", strconv.Itoa(e2e.FreePort(t)))
		base := "http://127.0.0.1:" + strconv.Itoa(httpPort)
		e2e.WaitFor(t, func() bool { return status(base+"/v1.0/healthz") == http.StatusNoContent }, "healthz 204")
		out := p.Output()
		for _, want := range []string{"left out of the built-in defaults", "listener dapr_subscriptions", "component pubsub"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
		got := invoke(t, base+"/v1.0/invoke/orders/method/neworder", "")
		if got.Path != "/neworder" || got.Body != `{"id":1}` {
			t.Errorf("app saw %+v", got)
		}
		// No in-memory broker in this build: publishing is a Dapr error, not a crash.
		resp, err := http.Post(base+"/v1.0/publish/pubsub/orders", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !bytes.Contains(b, []byte("ERR_PUBSUB_NOT_FOUND")) {
			t.Errorf("publish without brokers: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("example config with the headers filter", func(t *testing.T) {
		example, err := os.ReadFile("switchyard.yaml")
		if err != nil {
			t.Fatal(err)
		}
		httpPort, adminPort := e2e.FreePort(t), e2e.FreePort(t)
		cfg := strings.NewReplacer(":3500", ":"+strconv.Itoa(httpPort), ":9901", ":"+strconv.Itoa(adminPort)).Replace(string(example))
		cfgPath := filepath.Join(t.TempDir(), "switchyard.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command(bin, "validate", "-c", cfgPath, "--app-id", "orders").CombinedOutput(); err != nil {
			t.Fatalf("validate: %v\n%s", err, b)
		}
		e2e.Start(t, nil, bin, "--app-id", "orders", "--app-port", strconv.Itoa(appPort), "-c", cfgPath)
		base := "http://127.0.0.1:" + strconv.Itoa(httpPort)
		e2e.WaitFor(t, func() bool { return status(base+"/v1.0/healthz") == http.StatusNoContent }, "healthz 204")
		got := invoke(t, base+"/v1.0/invoke/orders/method/neworder", "custom-switchyard")
		if v := got.Headers["X-Tenant"]; len(v) != 1 || v[0] != "blue" {
			t.Errorf("app saw x-tenant %v, want [blue] (set by the headers filter)", v)
		}
	})

	t.Run("a filter this build lacks is refused at load", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, []byte("listeners:\n  - name: dapr_http\n    kind: http\n    addresses: [\"127.0.0.1:0\"]\n    filters:\n      - name: ratelimit\n        config: {requests_per_second: 1}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := exec.Command(bin, "validate", "-c", bad, "--app-id", "orders").CombinedOutput()
		if err == nil || !strings.Contains(string(b), `"ratelimit"`) || !strings.Contains(string(b), "headers") {
			t.Fatalf("validate accepted a filter that is not in the build, or did not say which (err %v):\n%s", err, b)
		}
	})
}

type echo struct {
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

// invoke posts {"id":1}, checks the response header the example config
// sets (when wantServedBy is not empty) and returns what the app saw.
func invoke(t *testing.T, url, wantServedBy string) echo {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"id":1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("invoke: %d %s", resp.StatusCode, b)
	}
	if got := resp.Header.Get("x-served-by"); got != wantServedBy {
		t.Errorf("x-served-by = %q, want %q", got, wantServedBy)
	}
	var e echo
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("app answer %s: %v", b, err)
	}
	return e
}

func status(url string) int {
	r, err := http.Get(url)
	if err != nil {
		return 0
	}
	r.Body.Close()
	return r.StatusCode
}
