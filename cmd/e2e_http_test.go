package cmd_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

type echoed struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   string              `json:"query"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

type daprError struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

func decodeError(t *testing.T, b []byte) daprError {
	t.Helper()
	var e daprError
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not a Dapr error body: %q: %v", b, err)
	}
	return e
}

// TestHTTPInvoke is the foundation issue end to end: a real app, the real
// binary with no config file, requests over real sockets.
func TestHTTPInvoke(t *testing.T) {
	appPort, _ := startApp(t)
	sc := startSidecar(t, nil, "orders", appPort)
	waitReady(t, sc)

	t.Run("invoke preserves method, path, query, headers, body", func(t *testing.T) {
		resp, b := do(t, "POST", sc.url("/v1.0/invoke/orders/method/neworder?x=1&y=two"), strings.NewReader(`{"id":7}`),
			"Content-Type", "application/json", "X-Custom", "kept",
			"Connection", "X-Hop, keep-alive", "X-Hop", "dropped", "Proxy-Authorization", "Basic Zm9v", "Te", "trailers")
		if resp.StatusCode != 200 || resp.Header.Get("X-App") != "httpapp" {
			t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
		}
		var e echoed
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		if e.Method != "POST" || e.Path != "/neworder" || e.Query != "x=1&y=two" || e.Body != `{"id":7}` {
			t.Fatalf("app saw %+v", e)
		}
		h := http.Header(e.Headers)
		if h.Get("Content-Type") != "application/json" || h.Get("X-Custom") != "kept" {
			t.Fatalf("headers lost: %v", h)
		}
		for _, hop := range []string{"X-Hop", "Proxy-Authorization", "Te"} {
			if h.Get(hop) != "" {
				t.Fatalf("hop-by-hop header %s reached the app: %v", hop, h)
			}
		}
		if h.Get("Dapr-Callee-App-Id") != "orders" || h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Host") == "" {
			t.Fatalf("forwarding headers missing: %v", h)
		}
	})

	t.Run("every verb", func(t *testing.T) {
		for _, verb := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
			resp, b := do(t, verb, sc.url("/v1.0/invoke/orders/method/v"), strings.NewReader("b"))
			var e echoed
			_ = json.Unmarshal(b, &e)
			if resp.StatusCode != 200 || e.Method != verb {
				t.Fatalf("%s: status %d, app saw %q", verb, resp.StatusCode, e.Method)
			}
		}
		resp, _ := do(t, "HEAD", sc.url("/v1.0/invoke/orders/method/v"), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("HEAD: %d", resp.StatusCode)
		}
	})

	t.Run("method names with slashes", func(t *testing.T) {
		_, b := do(t, "GET", sc.url("/v1.0/invoke/orders/method/api/v1/items/42"), nil)
		var e echoed
		_ = json.Unmarshal(b, &e)
		if e.Path != "/api/v1/items/42" {
			t.Fatalf("app path %q", e.Path)
		}
	})

	t.Run("dapr-app-id header on any path", func(t *testing.T) {
		_, b := do(t, "PUT", sc.url("/items/9?q=1"), strings.NewReader("x"), "dapr-app-id", "orders")
		var e echoed
		_ = json.Unmarshal(b, &e)
		if e.Method != "PUT" || e.Path != "/items/9" || e.Query != "q=1" {
			t.Fatalf("app saw %+v", e)
		}
	})

	t.Run("basic auth dapr-app-id", func(t *testing.T) {
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("dapr-app-id:orders"))
		_, b := do(t, "GET", sc.url("/basic/path"), nil, "Authorization", auth)
		var e echoed
		_ = json.Unmarshal(b, &e)
		if e.Path != "/basic/path" {
			t.Fatalf("app saw %+v", e)
		}
	})

	t.Run("the app's status and headers come back", func(t *testing.T) {
		for _, code := range []int{201, 404, 503} {
			resp, b := do(t, "GET", sc.url("/v1.0/invoke/orders/method/status/"+strconv.Itoa(code)), nil)
			if resp.StatusCode != code || string(b) != "status "+strconv.Itoa(code) || resp.Header.Get("X-App") != "httpapp" {
				t.Fatalf("want %d, got %d %q %v", code, resp.StatusCode, b, resp.Header)
			}
		}
	})

	t.Run("healthz, outbound, metadata", func(t *testing.T) {
		if resp, _ := do(t, "GET", sc.url("/v1.0/healthz/outbound"), nil); resp.StatusCode != 204 {
			t.Fatalf("outbound %d", resp.StatusCode)
		}
		if resp, _ := do(t, "PUT", sc.url("/v1.0/metadata/team"), strings.NewReader("payments")); resp.StatusCode != 204 {
			t.Fatalf("put metadata %d", resp.StatusCode)
		}
		resp, b := do(t, "GET", sc.url("/v1.0/metadata"), nil)
		var md struct {
			ID                      string            `json:"id"`
			RuntimeVersion          string            `json:"runtimeVersion"`
			Extended                map[string]string `json:"extended"`
			Components              []struct{ Name, Type string }
			AppConnectionProperties struct {
				Port     int    `json:"port"`
				Protocol string `json:"protocol"`
			} `json:"appConnectionProperties"`
		}
		if err := json.Unmarshal(b, &md); err != nil || resp.StatusCode != 200 {
			t.Fatalf("metadata %d %s %v", resp.StatusCode, b, err)
		}
		if md.ID != "orders" || md.RuntimeVersion == "" || md.AppConnectionProperties.Port != appPort ||
			md.AppConnectionProperties.Protocol != "http" || md.Extended["team"] != "payments" {
			t.Fatalf("metadata %s", b)
		}
	})

	t.Run("errors have Dapr's shape", func(t *testing.T) {
		resp, b := do(t, "GET", sc.url("/v1.0/invoke/nosuchapp/method/x"), nil)
		if e := decodeError(t, b); resp.StatusCode != 500 || e.ErrorCode != "ERR_DIRECT_INVOKE" || !strings.Contains(e.Message, "nosuchapp") {
			t.Fatalf("other app id: %d %s", resp.StatusCode, b)
		}
		resp, b = do(t, "GET", sc.url("/v1.0/nosuchapi"), nil)
		if e := decodeError(t, b); resp.StatusCode != 404 || e.ErrorCode != "ERR_NOT_FOUND" {
			t.Fatalf("unknown route: %d %s", resp.StatusCode, b)
		}
		// A body over the limit is refused from its Content-Length, before it is read.
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(sc.http))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("POST /v1.0/invoke/orders/method/big HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(5<<20) + "\r\n\r\n"))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		if e := decodeError(t, b); resp.StatusCode != 413 || e.ErrorCode != "ERR_BODY_TOO_LARGE" {
			t.Fatalf("body over 4 MB: %d %s", resp.StatusCode, b)
		}
		// a body under the limit passes
		if resp, _ := do(t, "POST", sc.url("/v1.0/invoke/orders/method/big"), bytes.NewReader(make([]byte, 3<<20))); resp.StatusCode != 200 {
			t.Fatalf("3 MB body: %d", resp.StatusCode)
		}
		// the sidecar keeps serving after bad input
		if resp, _ := do(t, "GET", sc.url("/v1.0/invoke/orders/method/ok"), nil); resp.StatusCode != 200 {
			t.Fatalf("after bad input: %d", resp.StatusCode)
		}
	})

	t.Run("metrics and admin listeners serve", func(t *testing.T) {
		resp, b := do(t, "GET", "http://127.0.0.1:"+strconv.Itoa(sc.metrics)+"/metrics", nil)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("metrics: %d %s", resp.StatusCode, b)
		}
		if os.Getenv("GOMAXPROCS") == "" && !strings.Contains(string(b), "\ndapr_runtime_procs 1\n") {
			t.Fatalf("an idle sidecar should run on one P:\n%s", b)
		}
		// By default the app's requests go through the pipelining client.
		if !regexp.MustCompile(`(?m)^dapr_app_pipeline_requests_total\{app_id="orders",cluster="app",way="pipelined"\} [1-9]`).Match(b) {
			t.Fatalf("no request to the app counted as pipelined (pipelining is on by default):\n%s", b)
		}
		resp, b = do(t, "GET", "http://127.0.0.1:"+strconv.Itoa(sc.admin)+"/ready", nil)
		if resp.StatusCode != 200 || string(b) != "LIVE\n" {
			t.Fatalf("admin ready: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("logs", func(t *testing.T) {
		out := sc.Output()
		if len(logLines(out, "application discovered on port "+strconv.Itoa(appPort))) != 1 {
			t.Fatalf("no discovery line:\n%s", out)
		}
		if l := logLines(out, "init_elapsed"); len(l) != 1 || !strings.Contains(l[0], `"app_id": "orders"`) || !strings.Contains(l[0], `"scope"`) {
			t.Fatalf("start-up line: %v", l)
		}
	})

	t.Run("shutdown", func(t *testing.T) {
		if resp, _ := do(t, "POST", sc.url("/v1.0/shutdown"), nil); resp.StatusCode != 204 {
			t.Fatalf("shutdown %d", resp.StatusCode)
		}
		select {
		case <-sc.Done:
			if sc.Err != nil {
				t.Fatalf("exit: %v", sc.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("did not exit after /v1.0/shutdown")
		}
	})
}

// TestProcs: --procs fixes the P count, and GOMAXPROCS from the
// environment wins over it.
func TestProcs(t *testing.T) {
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--procs", "3"}, "3"},
		{[]string{"SWITCHYARD_PROCS=5"}, nil, "5"},
		{[]string{"GOMAXPROCS=2"}, []string{"--procs", "3"}, "2"},
	} {
		sc := startSidecar(t, c.env, "procs", 0, c.args...)
		waitReady(t, sc)
		_, b := do(t, "GET", "http://127.0.0.1:"+strconv.Itoa(sc.metrics)+"/metrics", nil)
		if !strings.Contains(string(b), "\ndapr_runtime_procs "+c.want+"\n") {
			t.Errorf("env %v args %v: want dapr_runtime_procs %s:\n%s", c.env, c.args, c.want, b)
		}
		sc.Kill()
	}
	sc := startSidecar(t, nil, "procs", 0, "--procs", "-1")
	select {
	case <-sc.Done:
		if sc.Err == nil || !strings.Contains(sc.Output(), "procs: must not be negative") {
			t.Fatalf("--procs -1: exit %v\n%s", sc.Err, sc.Output())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--procs -1 did not refuse to start")
	}
}

// TestNotReadyUntilAppListens: healthz is 500 until the app port accepts.
func TestNotReadyUntilAppListens(t *testing.T) {
	appPort := freePort(t)
	sc := startSidecar(t, nil, "orders", appPort)
	waitFor(t, func() bool {
		r, err := http.Get(sc.url("/v1.0/healthz/outbound"))
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 204
	}, "outbound ready")
	resp, b := do(t, "GET", sc.url("/v1.0/healthz"), nil)
	if e := decodeError(t, b); resp.StatusCode != 500 || e.ErrorCode != "ERR_HEALTH_NOT_READY" {
		t.Fatalf("healthz before the app: %d %s", resp.StatusCode, b)
	}
	// the app is down: invoking fails at once with the reason, no hang
	began := time.Now()
	resp, b = do(t, "GET", sc.url("/v1.0/invoke/orders/method/x"), nil)
	if e := decodeError(t, b); resp.StatusCode != 500 || e.ErrorCode != "ERR_DIRECT_INVOKE" || !strings.Contains(e.Message, "refused") {
		t.Fatalf("app down: %d %s", resp.StatusCode, b)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("app down took %v", d)
	}
	_, httpapp := build(t)
	start(t, nil, httpapp, "-addr", "127.0.0.1:"+strconv.Itoa(appPort))
	waitReady(t, sc)
}

// TestConfigFile: routes, clusters and per-route timeouts from YAML; flags
// from SWITCHYARD_* env; validate; a bad file refused with file, field, reason.
func TestConfigFile(t *testing.T) {
	v1, _ := startApp(t)
	v2, _ := startApp(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "switchyard.yaml")
	writeFile(t, good, `
app_id: orders
routes:
  - name: canary
    match: {prefix: /invoke/orders/method/, headers: [{name: x-canary, exact: "1"}]}
    cluster: orders_v2
  - name: v2-api
    match: {glob: "/invoke/orders/method/v2/**", verbs: [GET]}
    cluster: orders_v2
  - name: slow
    match: {exact: /invoke/orders/method/slow}
    timeout: 100ms
clusters:
  - name: orders_v2
    kind: http
    endpoints: ["127.0.0.1:`+strconv.Itoa(v2)+`"]
`)
	bin, _ := build(t)
	if out, err := exec.Command(bin, "validate", "-c", good).CombinedOutput(); err != nil || !strings.Contains(string(out), "valid") {
		t.Fatalf("validate good: %v %s", err, out)
	}
	t.Run("routes", func(t *testing.T) {
		sc2 := startSidecar(t, nil, "orders", v1, "-c", good)
		waitReady(t, sc2)
		hostOf := func(b []byte) string {
			var e echoed
			_ = json.Unmarshal(b, &e)
			return e.Host
		}
		_, b := do(t, "GET", sc2.url("/v1.0/invoke/orders/method/a"), nil)
		if h := hostOf(b); h != "127.0.0.1:"+strconv.Itoa(v1) {
			t.Fatalf("default route went to %s", h)
		}
		_, b = do(t, "GET", sc2.url("/v1.0/invoke/orders/method/a"), nil, "x-canary", "1")
		if h := hostOf(b); h != "127.0.0.1:"+strconv.Itoa(v2) {
			t.Fatalf("header route went to %s", h)
		}
		_, b = do(t, "GET", sc2.url("/v1.0/invoke/orders/method/v2/x/y"), nil)
		if h := hostOf(b); h != "127.0.0.1:"+strconv.Itoa(v2) {
			t.Fatalf("glob route went to %s", h)
		}
		_, b = do(t, "POST", sc2.url("/v1.0/invoke/orders/method/v2/x/y"), nil)
		if h := hostOf(b); h != "127.0.0.1:"+strconv.Itoa(v1) {
			t.Fatalf("verb mismatch went to %s", h)
		}
		start := time.Now()
		resp, b := do(t, "GET", sc2.url("/v1.0/invoke/orders/method/slow?ms=2000"), nil)
		if e := decodeError(t, b); resp.StatusCode != 500 || e.ErrorCode != "ERR_DIRECT_INVOKE" || time.Since(start) > 1500*time.Millisecond {
			t.Fatalf("route timeout: %d %s after %v", resp.StatusCode, b, time.Since(start))
		}
	})

	t.Run("env sets flags", func(t *testing.T) {
		bin, _ := build(t)
		appPort := v1
		port := freePort(t)
		p := start(t, []string{"SWITCHYARD_DAPR_HTTP_PORT=" + strconv.Itoa(port), "SWITCHYARD_APP_ID=orders",
			"SWITCHYARD_APP_PORT=" + strconv.Itoa(appPort), "SWITCHYARD_DAPR_GRPC_PORT=" + strconv.Itoa(freePort(t)),
			"SWITCHYARD_METRICS_PORT=" + strconv.Itoa(freePort(t)), "SWITCHYARD_ADMIN_PORT=" + strconv.Itoa(freePort(t))}, bin)
		s := &sidecar{proc: p, http: port}
		waitReady(t, s)
		if resp, _ := do(t, "GET", s.url("/v1.0/invoke/orders/method/x"), nil); resp.StatusCode != 200 {
			t.Fatalf("invoke via env-configured sidecar: %d", resp.StatusCode)
		}
	})

	t.Run("bad file refused with file, field and reason", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.yaml")
		writeFile(t, bad, "listeners:\n  - name: x\n    kind: htp\n    addresses: [\"127.0.0.1:1\"]\n")
		out, err := exec.Command(bin, "validate", "-c", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "bad.yaml") || !strings.Contains(string(out), "listeners[0].kind") || !strings.Contains(string(out), "htp") {
			t.Fatalf("validate bad: %v %s", err, out)
		}
		cmd := exec.Command(bin, "--app-id", "orders", "-c", bad)
		out, err = cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(string(out), "listeners[0].kind") {
			t.Fatalf("run with bad file: %v %s", err, out)
		}
	})
}

// TestListenAddresses: an address that cannot be bound is skipped with a
// warning while the others serve.
func TestListenAddresses(t *testing.T) {
	appPort, _ := startApp(t)
	sc := startSidecar(t, nil, "orders", appPort, "--dapr-listen-addresses", "127.0.0.1,192.0.2.1")
	waitReady(t, sc)
	if resp, _ := do(t, "GET", sc.url("/v1.0/invoke/orders/method/x"), nil); resp.StatusCode != 200 {
		t.Fatalf("invoke: %d", resp.StatusCode)
	}
	if l := logLines(sc.Output(), "failed to listen on an address"); len(l) == 0 || !strings.Contains(l[0], "192.0.2.1") {
		t.Fatalf("no warning for the unbindable address:\n%s", sc.Output())
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPipelinedSlowAnswer: with the app's requests pipelined over one
// connection, a slow answer does not hold up the calls made once it is
// seen as slow (--app-pipeline-stall-after): they go on a connection of
// their own and are answered while it is still being waited on.
func TestPipelinedSlowAnswer(t *testing.T) {
	appPort, _ := startApp(t)
	sc := startSidecar(t, nil, "orders", appPort, "--app-pipeline-connections", "1", "--app-pipeline-stall-after", "50ms")
	waitReady(t, sc)
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Get(sc.url("/v1.0/invoke/orders/method/slow?ms=2000"))
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond) // the slow call is at the app, past the stall time
	for i := range 5 {
		resp, b := do(t, "POST", sc.url("/v1.0/invoke/orders/method/fast"), strings.NewReader(fmt.Sprint("call ", i)))
		if resp.StatusCode != 200 || !strings.Contains(string(b), fmt.Sprintf(`"body":"call %d"`, i)) {
			t.Fatalf("fast call %d: %d %q", i, resp.StatusCode, b)
		}
		select {
		case code := <-slow:
			t.Fatalf("fast call %d was answered only after the slow call ahead of it (%d)", i, code)
		default:
		}
	}
	if code := <-slow; code != 200 {
		t.Fatalf("slow call: %d", code)
	}
}
