package mdns

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
)

func getBuilder(t *testing.T) *builder {
	t.Helper()
	b, ok := resolver.Get(Scheme)
	if !ok {
		t.Fatalf("scheme %q not registered", Scheme)
	}
	return b.(*builder)
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    map[string]any
		errHas string
	}{
		{name: "defaults", cfg: nil},
		{name: "all keys", cfg: map[string]any{"domain": "local", "browse_timeout": "500ms", "refresh_interval": "10s", "address_ttl": "30s", "interface": "eth0", "disable_ipv6": true}},
		{name: "unknown key", cfg: map[string]any{"service": "x"}, errHas: "service: unknown field"},
		{name: "ttl below refresh", cfg: map[string]any{"refresh_interval": "10s", "address_ttl": "5s"}, errHas: "address_ttl"},
		{name: "negative browse", cfg: map[string]any{"browse_timeout": "-1s"}, errHas: "browse_timeout must be positive"},
		{name: "bad domain", cfg: map[string]any{"domain": "."}, errHas: "invalid domain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := getBuilder(t).ValidateConfig(tc.cfg)
			switch {
			case tc.errHas == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			}
		})
	}
}

func TestAnnounceErrors(t *testing.T) {
	tests := []struct {
		name   string
		inst   resolver.Instance
		cfg    map[string]any
		errHas string
	}{
		{name: "no app id", inst: resolver.Instance{Host: "10.0.0.1", InternalPort: 1}, errHas: "cannot be an mDNS service name"},
		{name: "dotted app id", inst: resolver.Instance{AppID: "a.b", Host: "10.0.0.1", InternalPort: 1}, errHas: "cannot be an mDNS service name"},
		{name: "no port", inst: resolver.Instance{AppID: "a", Host: "10.0.0.1"}, errHas: "invalid internal port"},
		{name: "no host", inst: resolver.Instance{AppID: "a", InternalPort: 1}, errHas: "empty host"},
		{name: "no such interface", inst: resolver.Instance{AppID: "a", Host: "10.0.0.1", InternalPort: 1}, cfg: map[string]any{"interface": "nope0"}, errHas: `interface "nope0"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := getBuilder(t).Announce(tc.inst, resolver.BuildOptions{Config: tc.cfg})
			if err == nil || !strings.Contains(err.Error(), tc.errHas) || !strings.HasPrefix(err.Error(), "resolver/mdns: ") {
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			}
		})
	}
}

// ---- Across two network namespaces --------------------------------------
//
// Loopback carries no multicast here, so the test builds a small network:
// two namespaces joined by a veth pair with a multicast route, announcers in
// one, a resolver in the other. The processes are this test binary re-run
// as TestHelperProcess under `ip netns exec`.

const (
	helperEnv = "SWITCHYARD_MDNS_HELPER" // announce | resolve
	argsEnv   = "SWITCHYARD_MDNS_ARGS"   // JSON helperArgs
)

type helperArgs struct {
	AppID  string         `json:"app_id"`
	Host   string         `json:"host"`
	Port   int            `json:"port"`
	Config map[string]any `json:"config"`
}

// requireNetns skips without root or iproute2, except in CI where the
// environment must provide them.
func requireNetns(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to create network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs ip (iproute2)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal(why + " (CI is set)")
	}
	t.Skip(why)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// netns creates a namespace removed at cleanup (after the processes in it,
// which are registered later and so cleaned up first).
func netns(t *testing.T, name string) {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", name).Run() // left over from a killed run
	ip(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
}

// helper is one process in a namespace; its stdout lines arrive on lines.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startHelper(t *testing.T, ns, mode string, args helperArgs) *helper {
	t.Helper()
	a, _ := json.Marshal(args)
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, argsEnv+"="+string(a))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, lines: make(chan string, 256)}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	return h
}

// waitLine returns the first line for which match is true.
func (h *helper) waitLine(t *testing.T, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper exited while waiting for %s; it said %q", what, seen)
			}
			seen = append(seen, l)
			if match(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("no %s after %v; helper said %q", what, timeout, seen)
		}
	}
}

// stop asks the helper to finish gracefully (EOF on stdin) and waits.
func (h *helper) stop(t *testing.T) {
	t.Helper()
	_ = h.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("helper did not stop")
	}
}

func stateLine(addrs ...string) func(string) bool {
	sort.Strings(addrs)
	want := "state " + strings.Join(addrs, ",")
	return func(l string) bool { return l == want }
}

func TestAcrossNetworkNamespaces(t *testing.T) {
	requireNetns(t)
	nsA := fmt.Sprintf("sy-mdns-%d-a", os.Getpid())
	nsB := fmt.Sprintf("sy-mdns-%d-b", os.Getpid())
	netns(t, nsA)
	netns(t, nsB)
	ip(t, "link", "add", "veth0", "netns", nsA, "type", "veth", "peer", "name", "veth1", "netns", nsB)
	for _, n := range []struct{ ns, dev, addr string }{{nsA, "veth0", "10.213.0.1/24"}, {nsB, "veth1", "10.213.0.2/24"}} {
		ip(t, "-n", n.ns, "link", "set", "lo", "up")
		ip(t, "-n", n.ns, "addr", "add", n.addr, "dev", n.dev)
		ip(t, "-n", n.ns, "link", "set", n.dev, "up", "multicast", "on")
		ip(t, "-n", n.ns, "route", "add", "224.0.0.0/4", "dev", n.dev)
	}

	cfg := map[string]any{"browse_timeout": "300ms", "refresh_interval": "300ms", "address_ttl": "1s"}
	// Two sidecars of one app on one host (namespace A), a third app beside
	// them that must not be confused with it.
	a1 := startHelper(t, nsA, "announce", helperArgs{AppID: "orders", Host: "10.213.0.1", Port: 50002, Config: cfg})
	a2 := startHelper(t, nsA, "announce", helperArgs{AppID: "orders", Host: "10.213.0.1", Port: 50012, Config: cfg})
	a3 := startHelper(t, nsA, "announce", helperArgs{AppID: "shipping", Host: "10.213.0.1", Port: 50022, Config: cfg})
	for _, h := range []*helper{a1, a2, a3} {
		h.waitLine(t, 10*time.Second, "announcement", func(l string) bool { return l == "ready" })
	}

	r := startHelper(t, nsB, "resolve", helperArgs{AppID: "orders", Config: cfg})
	r.waitLine(t, 15*time.Second, "both orders sidecars", stateLine("10.213.0.1:50002", "10.213.0.1:50012"))

	a1.stop(t) // withdraw one
	r.waitLine(t, 15*time.Second, "the withdrawn sidecar to go", stateLine("10.213.0.1:50012"))

	a2.stop(t)
	r.waitLine(t, 15*time.Second, "no addresses", stateLine())
	r.waitLine(t, 5*time.Second, "an error naming the app id", func(l string) bool {
		return strings.HasPrefix(l, `error resolver/mdns: app id "orders"`) && strings.Contains(l, "no addresses")
	})
	r.stop(t)
	a3.stop(t)
}

// lineSink prints what a resolver pushes, one line each.
type lineSink struct{ w io.Writer }

func (s lineSink) UpdateState(st resolver.State) error {
	addrs := make([]string, 0, len(st.Addresses))
	for _, a := range st.Addresses {
		addrs = append(addrs, a.Addr)
	}
	sort.Strings(addrs)
	_, err := fmt.Fprintf(s.w, "state %s\n", strings.Join(addrs, ","))
	return err
}

func (s lineSink) ReportError(err error) { fmt.Fprintf(s.w, "error %v\n", err) }

// TestHelperProcess is the announcer or resolver of
// TestAcrossNetworkNamespaces; it runs until its stdin closes.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process for TestAcrossNetworkNamespaces")
	}
	var a helperArgs
	if err := json.Unmarshal([]byte(os.Getenv(argsEnv)), &a); err != nil {
		t.Fatal(err)
	}
	b, _ := resolver.Get(Scheme)
	opts := resolver.BuildOptions{Config: a.Config}
	switch mode {
	case "announce":
		stop, err := b.(resolver.Announcer).Announce(resolver.Instance{AppID: a.AppID, Host: a.Host, InternalPort: a.Port}, opts)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	case "resolve":
		r, err := b.Build(resolver.Target{AppID: a.AppID}, lineSink{os.Stdout}, opts)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, os.Stdin)
		r.Close()
	}
}
