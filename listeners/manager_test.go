package listeners_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// The test registers a listener kind ("fake": a small fasthttp server that
// runs its chain for every request), a kind whose Start always fails, and a
// terminal filter ("test_version") that answers with its configured version
// and refuses to run once its chain was closed. So a request served by a
// retired, closed chain fails, and the tests see which chain served it.
const (
	kindFake   = "fake"
	kindBroken = "fake_broken"
	versionFlt = "test_version"
)

func init() {
	listeners.Register(fakeKind{})
	listeners.Register(brokenKind{})
	filters.Register(versionFactory{})
}

// ---- the fake listener kind ----

type fakeKind struct{}

var _ listeners.Factory = fakeKind{}

func (fakeKind) Kind() string { return kindFake }

type fakeListener struct {
	name   string
	chain  *listeners.ChainRef
	srv    *fasthttp.Server
	lns    []net.Listener
	closed atomic.Bool
}

var (
	fakesMu sync.Mutex
	fakes   []*fakeListener // every fake listener ever started, in order
)

func startedFakes(name string) []*fakeListener {
	fakesMu.Lock()
	defer fakesMu.Unlock()
	var out []*fakeListener
	for _, l := range fakes {
		if l.name == name {
			out = append(out, l)
		}
	}
	return out
}

func (fakeKind) Start(spec config.Listener, chain *listeners.ChainRef, rt *listeners.Runtime) (listeners.Listener, error) {
	lns, err := listeners.Listen(rt.Logger, spec.Name, spec.Addresses)
	if err != nil {
		return nil, err
	}
	l := &fakeListener{name: spec.Name, chain: chain, lns: lns}
	l.srv = &fasthttp.Server{Handler: l.serve, CloseOnShutdown: true}
	for _, ln := range lns {
		go func() { _ = l.srv.Serve(ln) }()
	}
	fakesMu.Lock()
	fakes = append(fakes, l)
	fakesMu.Unlock()
	return l, nil
}

func (l *fakeListener) serve(ctx *fasthttp.RequestCtx) {
	ex := filters.AcquireExchange(false)
	defer filters.ReleaseExchange(ex)
	ex.Req, ex.Resp, ex.Listener = &ctx.Request, &ctx.Response, l.name
	ex.SetInvoke([]byte("self"), []byte("m"))
	if err := l.chain.Load().Handle(ctx, ex); err != nil {
		ctx.Response.Reset()
		ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		ctx.SetBodyString(err.Error())
	}
}

func (l *fakeListener) Addrs() []net.Addr { return listeners.AddrsOf(l.lns) }

func (l *fakeListener) Close(ctx context.Context) error {
	l.closed.Store(true)
	err := l.srv.ShutdownWithContext(ctx)
	for _, ln := range l.lns {
		_ = ln.Close() // Serve may not have taken it yet
	}
	return err
}

type brokenKind struct{}

func (brokenKind) Kind() string { return kindBroken }
func (brokenKind) Start(config.Listener, *listeners.ChainRef, *listeners.Runtime) (listeners.Listener, error) {
	return nil, errors.New("cannot start")
}

// ---- the version filter ----

type versionConfig struct {
	Version string `json:"version"`
}

func (c *versionConfig) Validate() error {
	if c.Version == "" {
		return errors.New("version: required")
	}
	return nil
}

type versionFactory struct{}

var _ filters.Factory = versionFactory{}

func (versionFactory) Name() string   { return versionFlt }
func (versionFactory) NewConfig() any { return &versionConfig{} }
func (versionFactory) Build(cfg any, _ filters.Env) (filters.Filter, error) {
	f := &versionFilter{version: cfg.(*versionConfig).Version}
	builtMu.Lock()
	built[f.version] = append(built[f.version], f)
	builtMu.Unlock()
	return f, nil
}

type versionFilter struct {
	version string
	closed  atomic.Bool
}

var (
	builtMu sync.Mutex
	built   = map[string][]*versionFilter{} // by version
	holds   sync.Map                        // X-Hold value -> *holdPoint
)

// holdPoint stops a request inside the chain until released.
type holdPoint struct {
	entered chan struct{}
	release chan struct{}
}

func newHold(key string) *holdPoint {
	h := &holdPoint{entered: make(chan struct{}), release: make(chan struct{})}
	holds.Store(key, h)
	return h
}

func builtFilters(version string) []*versionFilter {
	builtMu.Lock()
	defer builtMu.Unlock()
	return append([]*versionFilter(nil), built[version]...)
}

func (f *versionFilter) Close() error {
	f.closed.Store(true)
	return nil
}

func (f *versionFilter) Wrap(filters.Handler) filters.Handler {
	return filters.HandlerFunc(func(_ context.Context, ex *filters.Exchange) error {
		if f.closed.Load() {
			return fmt.Errorf("chain %s used after it was closed", f.version)
		}
		if k := ex.Req.Header.Peek("X-Hold"); len(k) > 0 {
			if h, ok := holds.Load(string(k)); ok {
				close(h.(*holdPoint).entered)
				<-h.(*holdPoint).release
			}
		}
		if f.closed.Load() {
			return fmt.Errorf("chain %s closed while a request was in it", f.version)
		}
		ex.Resp.Header.Set("X-Version", f.version)
		ex.Resp.SetBodyString("ok")
		return nil
	})
}

// ---- helpers ----

// resetTrackers forgets the listeners and chains of earlier tests (and of
// earlier runs, with -count).
func resetTrackers() {
	fakesMu.Lock()
	fakes = nil
	fakesMu.Unlock()
	builtMu.Lock()
	built = map[string][]*versionFilter{}
	builtMu.Unlock()
}

func newRuntime() *listeners.Runtime {
	return &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: stats.NewRegistry("dapr_")}
}

func lis(name, kind, version string, addrs ...string) config.Listener {
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1:0"}
	}
	l := config.Listener{Name: name, Kind: kind, Addresses: addrs}
	if version != "" {
		l.Filters = []config.FilterSpec{{Name: versionFlt, Config: map[string]any{"version": version}}}
	}
	return l
}

func snap(ls ...config.Listener) *config.Snapshot {
	return config.NewSnapshot(&config.Config{AppID: "self", Listeners: ls}, "test")
}

func apply(t testing.TB, m *listeners.Manager, s *config.Snapshot) {
	t.Helper()
	if err := m.Apply(context.Background(), s); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func addrOf(t testing.TB, m *listeners.Manager, name string) string {
	t.Helper()
	a := m.Addrs(name)
	if len(a) != 1 {
		t.Fatalf("listener %s has addresses %v", name, a)
	}
	return a[0]
}

// get sends one request; hold names a hold point to stop in.
func get(addr, hold string) (status int, version, body string, err error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/")
	if hold != "" {
		req.Header.Set("X-Hold", hold)
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		return 0, "", "", err
	}
	return resp.StatusCode(), string(resp.Header.Peek("X-Version")), string(resp.Body()), nil
}

func wantVersion(t testing.TB, addr, version string) {
	t.Helper()
	code, v, body, err := get(addr, "")
	if err != nil || code != 200 || v != version {
		t.Fatalf("request: %v %d version %q body %q, want version %q", err, code, v, body, version)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func allClosed(fs []*versionFilter) bool {
	for _, f := range fs {
		if !f.closed.Load() {
			return false
		}
	}
	return len(fs) > 0
}

func refuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// ---- tests ----

// TestApplySwapsTheChainInPlace: a listener whose name, kind and addresses
// stay the same keeps its socket and gets the new chain; the old chain is
// closed once the drain period is over, the new one is not.
func TestApplySwapsTheChainInPlace(t *testing.T) {
	resetTrackers()
	rt := newRuntime()
	m := listeners.NewManager(rt, 20*time.Millisecond)
	defer m.Close(context.Background())

	apply(t, m, snap(lis("swap", kindFake, "swap-v1")))
	addr := addrOf(t, m, "swap")
	wantVersion(t, addr, "swap-v1")

	s2 := snap(lis("swap", kindFake, "swap-v2"))
	apply(t, m, s2)
	if got := addrOf(t, m, "swap"); got != addr {
		t.Fatalf("the listener was rebound: %s -> %s", addr, got)
	}
	if n := len(startedFakes("swap")); n != 1 {
		t.Fatalf("the listener was started %d times, want once", n)
	}
	wantVersion(t, addr, "swap-v2")
	if rt.Snapshot() != s2 {
		t.Fatal("the runtime does not serve the applied snapshot")
	}
	eventually(t, "the retired chain to be closed", func() bool { return allClosed(builtFilters("swap-v1")) })
	if builtFilters("swap-v2")[0].closed.Load() {
		t.Fatal("the serving chain was closed")
	}
	wantVersion(t, addr, "swap-v2")
}

// TestInFlightRequestKeepsItsChain: a request that is inside the chain
// when a new snapshot is applied finishes on that chain, successfully;
// requests that start after the swap get the new chain.
func TestInFlightRequestKeepsItsChain(t *testing.T) {
	resetTrackers()
	m := listeners.NewManager(newRuntime(), time.Second)
	defer m.Close(context.Background())
	apply(t, m, snap(lis("inflight", kindFake, "inflight-v1")))
	addr := addrOf(t, m, "inflight")

	h := newHold("inflight")
	type answer struct {
		code    int
		version string
		body    string
		err     error
	}
	done := make(chan answer, 1)
	go func() {
		code, v, body, err := get(addr, "inflight")
		done <- answer{code, v, body, err}
	}()
	select {
	case <-h.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request never reached the chain")
	}

	apply(t, m, snap(lis("inflight", kindFake, "inflight-v2")))
	wantVersion(t, addr, "inflight-v2")
	close(h.release)
	a := <-done
	if a.err != nil || a.code != 200 || a.version != "inflight-v1" {
		t.Fatalf("held request: %v %d version %q body %q, want 200 from inflight-v1", a.err, a.code, a.version, a.body)
	}
	eventually(t, "the retired chain to be closed after the drain", func() bool { return allClosed(builtFilters("inflight-v1")) })
}

// TestSwapUnderLoad swaps chains over and over while requests are in
// flight: none may fail (a request that ran on a closed chain fails), and
// afterwards the last chain serves and every retired chain is closed.
func TestSwapUnderLoad(t *testing.T) {
	resetTrackers()
	m := listeners.NewManager(newRuntime(), 300*time.Millisecond)
	defer m.Close(context.Background())
	version := func(i int) string { return fmt.Sprintf("load-%d", i) }
	apply(t, m, snap(lis("load", kindFake, version(0))))
	addr := addrOf(t, m, "load")

	client := &fasthttp.HostClient{Addr: addr, MaxConns: 32}
	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				select {
				case <-stop:
					return
				default:
				}
				req.SetRequestURI("http://" + addr + "/")
				err := client.DoTimeout(req, resp, 10*time.Second)
				if err != nil || resp.StatusCode() != 200 || !strings.HasPrefix(string(resp.Header.Peek("X-Version")), "load-") {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("err=%v status=%d body=%q", err, resp.StatusCode(), resp.Body()))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	const swaps = 60
	for i := 1; i <= swaps; i++ {
		apply(t, m, snap(lis("load", kindFake, version(i))))
		// Let a few requests run on every chain before the next swap.
		before := ok.Load() + failed.Load()
		eventually(t, "requests to make progress", func() bool {
			runtime.Gosched()
			return ok.Load()+failed.Load() >= before+3
		})
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during %d swaps; first: %v", failed.Load(), ok.Load()+failed.Load(), swaps, firstErr.Load())
	}
	wantVersion(t, addr, version(swaps))
	eventually(t, "every retired chain to be closed", func() bool {
		for i := range swaps {
			if !allClosed(builtFilters(version(i))) {
				return false
			}
		}
		return true
	})
	if builtFilters(version(swaps))[0].closed.Load() {
		t.Fatal("the serving chain was closed")
	}
	t.Logf("%d requests over %d swaps, none failed", ok.Load(), swaps)
}

// TestApplyIsAllOrNothing: a snapshot that cannot be built whole is
// refused; the previous one keeps serving, and whatever was built for the
// refused one is closed.
func TestApplyIsAllOrNothing(t *testing.T) {
	resetTrackers()
	rt := newRuntime()
	m := listeners.NewManager(rt, 10*time.Millisecond)
	defer m.Close(context.Background())
	good := snap(lis("aon", kindFake, "aon-v1"))
	apply(t, m, good)
	addr := addrOf(t, m, "aon")

	cases := []struct {
		name    string
		snap    *config.Snapshot
		wantErr string
		is      error
		aborted string // a version built for the refused snapshot, which must be closed
	}{
		{"unknown listener kind", snap(lis("aon", kindFake, "aon-kind"), lis("other", "nope", "")),
			`listeners[1] (other): kind "nope" is not available`, nil, "aon-kind"},
		{"unknown filter field", snap(lis("aon", kindFake, "aon-field"), config.Listener{Name: "b", Kind: kindFake, Addresses: []string{"127.0.0.1:0"},
			Filters: []config.FilterSpec{{Name: versionFlt, Config: map[string]any{"version": "x", "bogus": 1}}}}),
			"listeners[1] (b).filters[0] (test_version).config: bogus: unknown field", nil, "aon-field"},
		{"filter config fails validation", snap(lis("aon", kindFake, "aon-valid"), config.Listener{Name: "b", Kind: kindFake, Addresses: []string{"127.0.0.1:0"},
			Filters: []config.FilterSpec{{Name: versionFlt}}}),
			"listeners[1] (b).filters[0] (test_version).config: version: required", nil, "aon-valid"},
		{"unknown filter", snap(lis("aon", kindFake, "aon-unknown"), config.Listener{Name: "b", Kind: kindFake, Addresses: []string{"127.0.0.1:0"},
			Filters: []config.FilterSpec{{Name: "no_such_filter"}}}),
			`unknown filter "no_such_filter"`, filters.ErrUnknownFilter, "aon-unknown"},
		{"cluster of an unknown kind", config.NewSnapshot(&config.Config{AppID: "self",
			Listeners: []config.Listener{lis("aon", kindFake, "aon-cluster")},
			Clusters:  []config.Cluster{{Name: "c", Kind: "nope", Endpoints: []string{"127.0.0.1:1"}}}}, "test"),
			`clusters: c: kind "nope" is not available`, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := m.Apply(context.Background(), tc.snap)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err %v does not wrap %v", err, tc.is)
			}
			if rt.Snapshot() != good {
				t.Fatal("the refused snapshot became current")
			}
			wantVersion(t, addr, "aon-v1")
			if m.Addrs("b") != nil || m.Addrs("other") != nil {
				t.Fatal("a listener of the refused snapshot was started")
			}
			if tc.aborted != "" {
				fs := builtFilters(tc.aborted)
				if len(fs) == 0 {
					t.Fatalf("the test expected chain %s to have been built", tc.aborted)
				}
				if !allClosed(fs) {
					t.Fatalf("chain %s, built for the refused snapshot, was not closed", tc.aborted)
				}
			}
		})
	}
	if len(startedFakes("aon")) != 1 {
		t.Fatal("a refused snapshot restarted the listener")
	}
}

// TestListenersComeAndGo: listeners a snapshot drops are closed, changed
// addresses rebind, and Describe/Addrs report what runs.
func TestListenersComeAndGo(t *testing.T) {
	resetTrackers()
	rt := newRuntime()
	// The drain also bounds closing a listener; fasthttp checks for idle
	// connections every 100 ms.
	m := listeners.NewManager(rt, 500*time.Millisecond)
	defer m.Close(context.Background())
	apply(t, m, snap(lis("come-b", kindFake, "come-b1"), lis("come-a", kindFake, "come-a1")))
	addrA, addrB := addrOf(t, m, "come-a"), addrOf(t, m, "come-b")

	d := rt.Listeners()
	if len(d) != 2 || d[0].Name != "come-a" || d[1].Name != "come-b" || d[0].Kind != kindFake ||
		len(d[0].Addresses) != 1 || d[0].Addresses[0] != addrA {
		t.Fatalf("Describe %+v", d)
	}
	if m.Addrs("nope") != nil {
		t.Fatal("Addrs of an unknown listener")
	}

	// Drop b.
	apply(t, m, snap(lis("come-a", kindFake, "come-a2")))
	bs := startedFakes("come-b")
	if len(bs) != 1 || !bs[0].closed.Load() {
		t.Fatal("the dropped listener was not closed")
	}
	eventually(t, "the dropped listener's port to refuse connections", func() bool { return refuses(addrB) })
	eventually(t, "the dropped listener's chain to be closed", func() bool { return allClosed(builtFilters("come-b1")) })
	wantVersion(t, addrA, "come-a2")

	// Move a to another address: the old one is closed, the new one serves.
	other := freeAddr(t)
	apply(t, m, snap(lis("come-a", kindFake, "come-a3", other)))
	as := startedFakes("come-a")
	if len(as) != 2 || !as[0].closed.Load() || as[1].closed.Load() {
		t.Fatalf("moving a listener: %d starts", len(as))
	}
	if got := addrOf(t, m, "come-a"); got != other {
		t.Fatalf("a serves on %s, want %s", got, other)
	}
	wantVersion(t, other, "come-a3")
	eventually(t, "a's old address to refuse connections", func() bool { return refuses(addrA) })
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStartFailure: a listener that cannot start is reported by name, its
// chain is closed, and the others serve.
func TestStartFailure(t *testing.T) {
	resetTrackers()
	m := listeners.NewManager(newRuntime(), 10*time.Millisecond)
	defer m.Close(context.Background())
	err := m.Apply(context.Background(), snap(lis("sf-ok", kindFake, "sf-ok"), lis("sf-broken", kindBroken, "sf-broken")))
	if err == nil || !strings.Contains(err.Error(), "listener sf-broken (fake_broken): cannot start") {
		t.Fatalf("err %v", err)
	}
	wantVersion(t, addrOf(t, m, "sf-ok"), "sf-ok")
	if !allClosed(builtFilters("sf-broken")) {
		t.Fatal("the chain of the listener that failed to start was not closed")
	}
	if m.Addrs("sf-broken") != nil {
		t.Fatal("the broken listener is listed as running")
	}

	// A port in use: Listen fails for every address.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = m.Apply(context.Background(), snap(lis("sf-ok", kindFake, "sf-ok2"), lis("sf-busy", kindFake, "sf-busy", busy.Addr().String())))
	if err == nil || !strings.Contains(err.Error(), "listener sf-busy") || !strings.Contains(err.Error(), "could not bind any address") {
		t.Fatalf("err %v", err)
	}
}

// TestCloseDrainsEverything: Close stops every listener and closes the
// chains they served.
func TestCloseDrainsEverything(t *testing.T) {
	resetTrackers()
	m := listeners.NewManager(newRuntime(), 10*time.Millisecond)
	apply(t, m, snap(lis("close-a", kindFake, "close-a"), lis("close-b", kindFake, "close-b")))
	addrA, addrB := addrOf(t, m, "close-a"), addrOf(t, m, "close-b")
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"close-a", "close-b"} {
		if l := startedFakes(n); len(l) != 1 || !l[0].closed.Load() {
			t.Fatalf("%s not closed", n)
		}
		if !allClosed(builtFilters(n)) {
			t.Fatalf("chain of %s not closed", n)
		}
	}
	if !refuses(addrA) || !refuses(addrB) {
		t.Fatal("a closed listener still accepts connections")
	}
	if d := m.Describe(); len(d) != 0 {
		t.Fatalf("still running after Close: %+v", d)
	}
}

// TestBuild is `switchyard validate`: it builds everything, serves
// nothing, and closes what it built.
func TestBuild(t *testing.T) {
	resetTrackers()
	rt := newRuntime()
	if err := listeners.Build(context.Background(), rt, snap(lis("build", kindFake, "build-ok"))); err != nil {
		t.Fatal(err)
	}
	if len(startedFakes("build")) != 0 {
		t.Fatal("Build started a listener")
	}
	if !allClosed(builtFilters("build-ok")) {
		t.Fatal("Build left a chain open")
	}
	if rt.Snapshot() != nil {
		t.Fatal("Build made the snapshot current")
	}
	for _, tc := range []struct {
		name string
		s    *config.Snapshot
		want string
	}{
		{"unknown kind", snap(lis("x", "nope", "")), `kind "nope" is not available`},
		{"bad filter", snap(config.Listener{Name: "x", Kind: kindFake, Filters: []config.FilterSpec{{Name: versionFlt, Config: map[string]any{"bogus": true}}}}), "bogus: unknown field"},
		{"router not last", snap(config.Listener{Name: "x", Kind: kindFake, Filters: []config.FilterSpec{{Name: config.RouterFilter}, {Name: versionFlt, Config: map[string]any{"version": "v"}}}}), "the router must be the last filter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := listeners.Build(context.Background(), rt, tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
