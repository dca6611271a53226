package consul

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/resolvertest"
)

// fakeAgent implements exactly the Consul agent endpoints this scheme uses
// (no Consul agent can be installed where these tests run): service
// register/deregister, check pass with TTL expiry, and health/service with
// passing=true and blocking queries (index, wait).
type fakeAgent struct {
	mu       sync.Mutex
	index    uint64
	changed  chan struct{}
	services map[string]*fakeService // by ID
	regs     []registration          // every registration body received
	passes   map[string]int          // check id -> passes received
	srv      *httptest.Server
}

type fakeService struct {
	reg      registration
	ttl      time.Duration
	lastPass time.Time
	passing  bool
}

func startAgent(t *testing.T) *fakeAgent {
	t.Helper()
	a := &fakeAgent{index: 1, changed: make(chan struct{}), services: map[string]*fakeService{}, passes: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/agent/service/register", a.register)
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", a.deregister)
	mux.HandleFunc("PUT /v1/agent/check/pass/{id}", a.pass)
	mux.HandleFunc("GET /v1/health/service/{name}", a.health)
	a.srv = httptest.NewServer(mux)
	stop := make(chan struct{})
	done := make(chan struct{})
	go a.expire(stop, done)
	t.Cleanup(func() { close(stop); <-done; a.srv.Close() })
	return a
}

func (a *fakeAgent) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// bump records a change; the caller holds mu.
func (a *fakeAgent) bump() {
	a.index++
	close(a.changed)
	a.changed = make(chan struct{})
}

// expire turns checks critical when their TTL passes, as the agent does.
func (a *fakeAgent) expire(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		a.mu.Lock()
		for _, s := range a.services {
			if s.passing && time.Since(s.lastPass) > s.ttl {
				s.passing = false
				a.bump()
			}
		}
		a.mu.Unlock()
	}
}

func (a *fakeAgent) register(w http.ResponseWriter, r *http.Request) {
	var reg registration
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reg); err != nil {
		http.Error(w, "bad registration: "+err.Error(), http.StatusBadRequest)
		return
	}
	ttl, err := time.ParseDuration(reg.Check.TTL)
	if err != nil || reg.ID == "" || reg.Name == "" {
		http.Error(w, "bad registration", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.regs = append(a.regs, reg)
	a.services[reg.ID] = &fakeService{reg: reg, ttl: ttl, lastPass: time.Now(), passing: reg.Check.Status == "passing"}
	a.bump()
}

func (a *fakeAgent) deregister(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.services[r.PathValue("id")]; !ok {
		http.Error(w, "Unknown service ID", http.StatusNotFound)
		return
	}
	delete(a.services, r.PathValue("id"))
	a.bump()
}

func (a *fakeAgent) pass(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := r.PathValue("id")
	for _, s := range a.services {
		if s.reg.Check.CheckID == id {
			a.passes[id]++
			s.lastPass = time.Now()
			if !s.passing {
				s.passing = true
				a.bump()
			}
			return
		}
	}
	http.Error(w, `CheckID "`+id+`" does not have associated TTL`, http.StatusNotFound)
}

func (a *fakeAgent) health(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("passing") != "true" {
		http.Error(w, "test agent serves passing=true only", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	if idx, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64); idx > 0 && idx >= a.index {
		wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
		if err != nil {
			a.mu.Unlock()
			http.Error(w, "bad wait", http.StatusBadRequest)
			return
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
		a.mu.Lock()
	}
	defer a.mu.Unlock()
	type svc struct {
		ID      string            `json:"ID"`
		Service string            `json:"Service"`
		Address string            `json:"Address"`
		Port    int               `json:"Port"`
		Meta    map[string]string `json:"Meta"`
	}
	type entry struct {
		Node    map[string]string `json:"Node"`
		Service svc               `json:"Service"`
	}
	out := []entry{}
	for _, s := range a.services {
		if s.reg.Name == r.PathValue("name") && s.passing {
			out = append(out, entry{
				Node:    map[string]string{"Node": "test", "Address": "127.0.0.1"},
				Service: svc{ID: s.reg.ID, Service: s.reg.Name, Address: s.reg.Address, Port: s.reg.Port, Meta: s.reg.Meta},
			})
		}
	}
	w.Header().Set("X-Consul-Index", strconv.FormatUint(a.index, 10))
	_ = json.NewEncoder(w).Encode(out)
}

func (a *fakeAgent) registrations() []registration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]registration(nil), a.regs...)
}

func (a *fakeAgent) serviceIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for id := range a.services {
		ids = append(ids, id)
	}
	return ids
}

// ---- tests ---------------------------------------------------------------

const wait = 5 * time.Second

func testConfig(a *fakeAgent) map[string]any {
	return map[string]any{"address": a.addr(), "check_ttl": "300ms", "wait_time": "2s", "meta": map[string]any{"zone": "a"}}
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

func resolve(t *testing.T, cfg map[string]any, appID string) (*resolvertest.Sink, resolver.Resolver) {
	t.Helper()
	s := resolvertest.NewSink()
	r, err := getBuilder(t).Build(resolver.Target{AppID: appID, Namespace: "default"}, s, resolver.BuildOptions{Config: cfg})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(r.Close)
	return s, r
}

func orders(internal, http int) resolver.Instance {
	return resolver.Instance{AppID: "orders", Host: "127.0.0.1", InternalPort: internal, HTTPPort: http, AppPort: 3000}
}

func TestConsul(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, a *fakeAgent, cfg map[string]any)
	}{
		{
			name: "registration as daprd makes it",
			run: func(t *testing.T, a *fakeAgent, cfg map[string]any) {
				announce(t, cfg, orders(50002, 3500))
				regs := a.registrations()
				if len(regs) != 1 {
					t.Fatalf("%d registrations, want 1", len(regs))
				}
				r := regs[0]
				if r.ID != "orders-127.0.0.1-3500" || r.Name != "orders" || r.Address != "127.0.0.1" || r.Port != 3000 ||
					r.Meta["DAPR_PORT"] != "50002" || r.Meta["zone"] != "a" || r.Check.TTL != "300ms" || r.Check.Status != "passing" {
					t.Fatalf("registration %+v", r)
				}
			},
		},
		{
			name: "two announcers, one stops",
			run: func(t *testing.T, a *fakeAgent, cfg map[string]any) {
				stop := announce(t, cfg, orders(50002, 3500))
				announce(t, cfg, orders(50012, 3510))
				s, _ := resolve(t, cfg, "orders")
				s.WaitForAddrs(t, wait, "127.0.0.1:50002", "127.0.0.1:50012")
				if err := stop(); err != nil {
					t.Fatalf("stop: %v", err)
				}
				start := time.Now()
				s.WaitForAddrs(t, wait, "127.0.0.1:50012")
				// A blocking query, not the 2s wait_time, brought the change.
				if el := time.Since(start); el > time.Second {
					t.Fatalf("deregistration seen after %v", el)
				}
				if ids := a.serviceIDs(); len(ids) != 1 || ids[0] != "orders-127.0.0.1-3510" {
					t.Fatalf("agent still holds %v", ids)
				}
			},
		},
		{
			name: "heartbeats keep the check passing beyond its ttl",
			run: func(t *testing.T, a *fakeAgent, cfg map[string]any) {
				announce(t, cfg, orders(50002, 3500))
				s, _ := resolve(t, cfg, "orders")
				s.WaitForAddrs(t, wait, "127.0.0.1:50002")
				time.Sleep(time.Second) // > 3 ttl: nothing to wait on, checking nothing expires
				s.WaitForAddrs(t, 0, "127.0.0.1:50002")
				if n := len(s.States()); n != 1 {
					t.Fatalf("instance flapped: %d states", n)
				}
			},
		},
		{
			name: "re-registers when the agent forgot the instance",
			run: func(t *testing.T, a *fakeAgent, cfg map[string]any) {
				announce(t, cfg, orders(50002, 3500))
				a.mu.Lock()
				delete(a.services, "orders-127.0.0.1-3500") // agent restarted
				a.bump()
				a.mu.Unlock()
				deadline := time.Now().Add(wait)
				for len(a.serviceIDs()) != 1 {
					if time.Now().After(deadline) {
						t.Fatal("announcer did not register again")
					}
					time.Sleep(10 * time.Millisecond)
				}
			},
		},
		{
			name: "unknown app reports app id",
			run: func(t *testing.T, a *fakeAgent, cfg map[string]any) {
				s, _ := resolve(t, cfg, "payments")
				s.WaitForAddrs(t, wait)
				err := s.WaitForError(t, wait, nil)
				if !errors.Is(err, resolver.ErrNoAddresses) || !strings.Contains(err.Error(), `resolver/consul: app id "payments" in namespace "default"`) {
					t.Fatalf("error %q", err)
				}
			},
		},
		{
			name: "agent down reports and keeps last good addresses",
			run: func(t *testing.T, a *fakeAgent, cfg map[string]any) {
				announce(t, cfg, orders(50002, 3500))
				s, _ := resolve(t, cfg, "orders")
				s.WaitForAddrs(t, wait, "127.0.0.1:50002")
				a.srv.CloseClientConnections()
				a.srv.Listener.Close()
				err := s.WaitForError(t, wait, nil)
				if !strings.Contains(err.Error(), `resolver/consul: app id "orders"`) || !strings.Contains(err.Error(), "/v1/health/service/orders") {
					t.Fatalf("error %q", err)
				}
				if last, _ := s.Last(); len(last.Addresses) != 1 {
					t.Fatalf("addresses after agent failure: %v", resolvertest.Addrs(last))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startAgent(t)
			tc.run(t, a, testConfig(a))
		})
	}
}

// TestCrashedAnnouncerExpires kills an announcing child process (no
// deregistration) and waits for its TTL check to fail.
func TestCrashedAnnouncerExpires(t *testing.T) {
	a := startAgent(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "SWITCHYARD_CONSUL_HELPER="+a.addr())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("helper exited before announcing")
		}
	case <-time.After(wait):
		t.Fatal("helper did not announce")
	}
	s, _ := resolve(t, testConfig(a), "orders")
	s.WaitForAddrs(t, wait, "127.0.0.1:50077")
	// Let it heartbeat at least twice, so that what expires is a live
	// instance that stopped, not one that never passed.
	deadline := time.Now().Add(wait)
	for {
		a.mu.Lock()
		passes := a.passes["daprHealth:orders-127.0.0.1-3577"]
		a.mu.Unlock()
		if passes >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the helper never passed its check")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	s.WaitForAddrs(t, wait)
	if ids := a.serviceIDs(); len(ids) != 1 {
		t.Fatalf("agent holds %v; the crashed instance stays registered (critical) until deregister_critical_service_after", ids)
	}
}

// TestHelperProcess is the child of TestCrashedAnnouncerExpires.
func TestHelperProcess(t *testing.T) {
	addr := os.Getenv("SWITCHYARD_CONSUL_HELPER")
	if addr == "" {
		t.Skip("helper process for TestCrashedAnnouncerExpires")
	}
	b, _ := resolver.Get(Scheme)
	cfg := map[string]any{"address": addr, "check_ttl": "300ms"}
	if _, err := b.(resolver.Announcer).Announce(orders(50077, 3577), resolver.BuildOptions{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	select {} // until killed
}

func TestAnnounceErrors(t *testing.T) {
	a := startAgent(t)
	tests := []struct {
		name   string
		inst   resolver.Instance
		cfg    map[string]any
		errHas string
	}{
		{name: "no app id", inst: resolver.Instance{Host: "h", InternalPort: 1}, cfg: testConfig(a), errHas: "need app id"},
		{name: "no port", inst: resolver.Instance{AppID: "a", Host: "h"}, cfg: testConfig(a), errHas: "need app id, host and internal port"},
		{name: "all config keys", inst: orders(1, 2), cfg: map[string]any{"address": a.addr(), "check_ttl": "1h", "meta": map[string]any{}, "token": "x", "scheme": "http", "datacenter": "dc1", "tags": []any{"t"}, "dapr_port_meta_key": "DAPR_PORT", "deregister_critical_service_after": "1m", "wait_time": "1s", "timeout": "1s"}, errHas: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stop, err := getBuilder(t).Announce(tc.inst, resolver.BuildOptions{Config: tc.cfg})
			if tc.errHas == "" {
				if err != nil {
					t.Fatalf("Announce: %v", err)
				}
				_ = stop()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) || !strings.HasPrefix(err.Error(), "resolver/consul: ") {
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			}
		})
	}
}

func TestAgentRefusesRegistration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Permission denied", http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	_, err := getBuilder(t).Announce(orders(1, 2), resolver.BuildOptions{Config: map[string]any{"address": strings.TrimPrefix(srv.URL, "http://")}})
	if !errors.Is(err, ErrAgent) || !strings.Contains(err.Error(), "status 403: Permission denied") || !strings.Contains(err.Error(), `app id "orders"`) {
		t.Fatalf("error %v", err)
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    map[string]any
		errHas string
	}{
		{name: "defaults", cfg: nil},
		{name: "unknown key", cfg: map[string]any{"addr": "x"}, errHas: "addr: unknown field"},
		{name: "bad address", cfg: map[string]any{"address": "consul"}, errHas: "want host:port"},
		{name: "bad scheme", cfg: map[string]any{"scheme": "grpc"}, errHas: "want http or https"},
		{name: "negative ttl", cfg: map[string]any{"check_ttl": "-1s"}, errHas: "check_ttl must be positive"},
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
