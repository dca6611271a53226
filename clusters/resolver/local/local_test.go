package local

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/resolvertest"
)

const wait = 5 * time.Second

func testConfig(dir string) map[string]any {
	return map[string]any{"dir": dir, "heartbeat": "50ms", "ttl": "600ms"}
}

func getBuilder(t *testing.T) *builder {
	t.Helper()
	b, ok := resolver.Get(Scheme)
	if !ok {
		t.Fatalf("scheme %q not registered", Scheme)
	}
	return b.(*builder)
}

func announce(t *testing.T, cfg map[string]any, inst resolver.Instance) func() error {
	t.Helper()
	stop, err := getBuilder(t).Announce(inst, resolver.BuildOptions{Config: cfg})
	if err != nil {
		t.Fatalf("Announce: %v", err)
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func resolve(t *testing.T, cfg map[string]any, target resolver.Target) (*resolvertest.Sink, resolver.Resolver) {
	t.Helper()
	s := resolvertest.NewSink()
	r, err := getBuilder(t).Build(target, s, resolver.BuildOptions{Config: cfg})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(r.Close)
	return s, r
}

func orders(port int) resolver.Instance {
	return resolver.Instance{AppID: "orders", Host: "127.0.0.1", InternalPort: port, HTTPPort: port + 1}
}

func writeRecord(t *testing.T, dir string, rec record) string {
	t.Helper()
	d := filepath.Join(dir, rec.Namespace, rec.AppID)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rec)
	p := filepath.Join(d, rec.Host+"_"+strconv.Itoa(rec.InternalPort)+".json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRegistry(t *testing.T) {
	target := resolver.Target{AppID: "orders"}
	tests := []struct {
		name string
		run  func(t *testing.T, dir string, cfg map[string]any)
	}{
		{
			name: "two announcers, then one stops",
			run: func(t *testing.T, dir string, cfg map[string]any) {
				stopA := announce(t, cfg, orders(50002))
				announce(t, cfg, orders(50012))
				s, _ := resolve(t, cfg, target)
				s.WaitForAddrs(t, wait, "127.0.0.1:50002", "127.0.0.1:50012")
				if err := stopA(); err != nil {
					t.Fatalf("stop: %v", err)
				}
				s.WaitForAddrs(t, wait, "127.0.0.1:50012")
				if _, err := os.Stat(filepath.Join(dir, "default", "orders", "127.0.0.1_50002.json")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("stop left the file behind: %v", err)
				}
			},
		},
		{
			name: "live instances outlast ttl by heartbeats",
			run: func(t *testing.T, dir string, cfg map[string]any) {
				announce(t, cfg, orders(50002))
				s, _ := resolve(t, cfg, target)
				s.WaitForAddrs(t, wait, "127.0.0.1:50002")
				time.Sleep(1500 * time.Millisecond) // > 2 ttl: nothing to wait on, checking nothing expires
				s.WaitForAddrs(t, 0, "127.0.0.1:50002")
				if n := len(s.States()); n != 1 {
					t.Fatalf("a live instance flapped: %d states", n)
				}
			},
		},
		{
			name: "stale file is ignored and removed",
			run: func(t *testing.T, dir string, cfg map[string]any) {
				stale := writeRecord(t, dir, record{AppID: "orders", Namespace: "default", Host: "127.0.0.1", InternalPort: 50099, Heartbeat: time.Now().Add(-time.Hour)})
				announce(t, cfg, orders(50002))
				s, _ := resolve(t, cfg, target)
				s.WaitForAddrs(t, wait, "127.0.0.1:50002")
				for _, st := range s.States() {
					for _, a := range resolvertest.Addrs(st) {
						if a == "127.0.0.1:50099" {
							t.Fatalf("stale instance was resolved: %v", resolvertest.Addrs(st))
						}
					}
				}
				if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("stale file not removed: %v", err)
				}
			},
		},
		{
			name: "only the target's app and namespace",
			run: func(t *testing.T, dir string, cfg map[string]any) {
				announce(t, cfg, resolver.Instance{AppID: "orders", Namespace: "prod", Host: "127.0.0.1", InternalPort: 50002})
				announce(t, cfg, resolver.Instance{AppID: "shipping", Host: "127.0.0.1", InternalPort: 50003})
				announce(t, cfg, orders(50004))
				s, _ := resolve(t, cfg, resolver.Target{AppID: "orders", Namespace: "prod"})
				s.WaitForAddrs(t, wait, "127.0.0.1:50002")
			},
		},
		{
			name: "unknown app reports app id and no addresses",
			run: func(t *testing.T, dir string, cfg map[string]any) {
				s, r := resolve(t, cfg, resolver.Target{AppID: "payments"})
				s.WaitForAddrs(t, wait)
				r.ResolveNow()
				err := s.WaitForError(t, wait, nil)
				if !errors.Is(err, resolver.ErrNoAddresses) || !strings.Contains(err.Error(), `resolver/local: app id "payments" in namespace "default"`) {
					t.Fatalf("error %q", err)
				}
			},
		},
		{
			name: "late announcer is picked up",
			run: func(t *testing.T, dir string, cfg map[string]any) {
				s, _ := resolve(t, cfg, target)
				s.WaitForAddrs(t, wait)
				announce(t, cfg, orders(50002))
				s.WaitForAddrs(t, wait, "127.0.0.1:50002")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.run(t, dir, testConfig(dir))
		})
	}
}

// TestCrashedAnnouncerExpires runs an announcer in a child process, kills it
// with SIGKILL (no stop, no cleanup) and waits for its entry to expire.
func TestCrashedAnnouncerExpires(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "SWITCHYARD_LOCAL_HELPER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready") {
				ready <- sc.Text()
				return
			}
		}
		close(ready)
	}()
	select {
	case line, ok := <-ready:
		if !ok {
			t.Fatal("helper exited before announcing")
		}
		_ = line
	case <-time.After(wait):
		t.Fatal("helper did not announce")
	}

	s, _ := resolve(t, cfg, resolver.Target{AppID: "orders"})
	s.WaitForAddrs(t, wait, "127.0.0.1:50077")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	s.WaitForAddrs(t, wait)
	if el := time.Since(killed); el > 3*time.Second {
		t.Fatalf("crashed instance took %v to expire with ttl 600ms", el)
	}
	if _, err := os.Stat(filepath.Join(dir, "default", "orders", "127.0.0.1_50077.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dead instance's file not removed: %v", err)
	}
}

// TestHelperProcess is the child of TestCrashedAnnouncerExpires.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("SWITCHYARD_LOCAL_HELPER")
	if dir == "" {
		t.Skip("helper process for TestCrashedAnnouncerExpires")
	}
	b, _ := resolver.Get(Scheme)
	if _, err := b.(resolver.Announcer).Announce(orders(50077), resolver.BuildOptions{Config: testConfig(dir)}); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	select {} // until killed
}

func TestAnnounceErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		inst   resolver.Instance
		errHas string
	}{
		{name: "no app id", inst: resolver.Instance{Host: "h", InternalPort: 1}, errHas: `invalid app id ""`},
		{name: "path in app id", inst: resolver.Instance{AppID: "../x", Host: "h", InternalPort: 1}, errHas: "invalid app id"},
		{name: "no host", inst: resolver.Instance{AppID: "a", InternalPort: 1}, errHas: "invalid host"},
		{name: "no port", inst: resolver.Instance{AppID: "a", Host: "h"}, errHas: "invalid internal port 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := getBuilder(t).Announce(tc.inst, resolver.BuildOptions{Config: testConfig(dir)})
			if err == nil || !strings.Contains(err.Error(), tc.errHas) || !strings.HasPrefix(err.Error(), "resolver/local: ") {
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			}
		})
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    map[string]any
		errHas string
	}{
		{name: "defaults", cfg: nil},
		{name: "all keys", cfg: map[string]any{"dir": "/x", "heartbeat": "1s", "ttl": "5s"}},
		{name: "unknown key", cfg: map[string]any{"directory": "/x"}, errHas: "directory: unknown field"},
		{name: "ttl not above heartbeat", cfg: map[string]any{"heartbeat": "2s", "ttl": "2s"}, errHas: "must be longer than heartbeat"},
		{name: "negative heartbeat", cfg: map[string]any{"heartbeat": "-1s"}, errHas: "heartbeat must be positive"},
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

func TestDefaults(t *testing.T) {
	tests := []struct {
		name, xdg, want string
	}{
		{name: "XDG_RUNTIME_DIR set", xdg: "/run/user/1000", want: "/run/user/1000/switchyard/registry"},
		{name: "XDG_RUNTIME_DIR unset", xdg: "", want: filepath.Join(os.TempDir(), "switchyard-registry-"+strconv.Itoa(os.Getuid()))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XDG_RUNTIME_DIR", tc.xdg)
			c, err := decode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.Dir != tc.want || c.Heartbeat.D() != 2*time.Second || c.TTL.D() != 6*time.Second {
				t.Fatalf("defaults %+v, want dir %s, heartbeat 2s, ttl 6s", c, tc.want)
			}
		})
	}
}
