package cmd_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestZeroConfigTwoSidecars: two sidecars on one host with no name
// resolution configured find each other through the default `local`
// registry; a sidecar that stops is withdrawn and invoking it fails with
// ERR_DIRECT_INVOKE naming the app id.
func TestZeroConfigTwoSidecars(t *testing.T) {
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	caller, callee := "caller-"+suffix, "callee-"+suffix

	appPort, _ := startApp(t)
	b := startSidecar(t, nil, callee, appPort)
	a := startSidecar(t, nil, caller, 0)
	waitReady(t, b)
	waitReady(t, a)

	var e echoed
	waitFor(t, func() bool {
		resp, body := do(t, "POST", a.url("/v1.0/invoke/"+callee+"/method/hello?q=1"), strings.NewReader("hi"), "Content-Type", "text/plain")
		if resp.StatusCode != 200 {
			return false
		}
		return json.Unmarshal(body, &e) == nil
	}, "the caller's sidecar to reach the callee through the local registry")
	if e.Path != "/hello" || e.Query != "q=1" || e.Body != "hi" {
		t.Fatalf("callee app saw %+v", e)
	}
	h := http.Header(e.Headers)
	if h.Get("Dapr-Caller-App-Id") != caller || h.Get("Dapr-Callee-App-Id") != callee {
		t.Fatalf("caller/callee headers: %v", h)
	}

	// Stop the callee's sidecar gracefully: it withdraws from the registry.
	_ = b.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.Done:
	case <-time.After(10 * time.Second):
		t.Fatal("callee sidecar did not stop")
	}
	began := time.Now()
	waitFor(t, func() bool {
		resp, body := do(t, "GET", a.url("/v1.0/invoke/"+callee+"/method/hello"), nil)
		if resp.StatusCode != 500 {
			return false
		}
		var de daprError
		return json.Unmarshal(body, &de) == nil && de.ErrorCode == "ERR_DIRECT_INVOKE" && strings.Contains(de.Message, callee)
	}, "invoking the stopped callee to fail with ERR_DIRECT_INVOKE")
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("took %v to notice the callee left", d)
	}
}
