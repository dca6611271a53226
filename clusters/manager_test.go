package clusters

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/clusters/httpcluster"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/registry"
)

// The test binary registers fake kinds: "fake" clusters, the "sidecar"
// kind (no real one is linked into this package's tests) and a "fakecat"
// component category. Each build is recorded in built.
const fakeKind = "fake"

func init() {
	RegisterKind(fakeBuilder{fakeKind})
	RegisterKind(fakeBuilder{config.ClusterSidecar})
	RegisterComponents(fakeComponents{})
}

// fake is a built cluster or component that counts its Close calls.
type fake struct {
	name     string
	cfg      config.Cluster
	comp     config.Component
	env      Env
	deadline bool // component: the build context had a deadline
	closed   atomic.Int32
	closedAt atomic.Int64 // unix nanos of the first Close
	closeErr error
}

func (f *fake) Handle(_ context.Context, ex *filters.Exchange) error {
	ex.Resp.SetBodyString(f.name)
	return nil
}

func (f *fake) Close() error {
	f.closedAt.CompareAndSwap(0, time.Now().UnixNano())
	f.closed.Add(1)
	return f.closeErr
}

func (f *fake) Capabilities() []string { return []string{"BULK_PUBLISH"} }

var built struct {
	mu   sync.Mutex
	list []*fake
}

func record(f *fake) *fake {
	built.mu.Lock()
	built.list = append(built.list, f)
	built.mu.Unlock()
	return f
}

// builds returns how many clusters named name were built.
func builds(name string) int {
	built.mu.Lock()
	defer built.mu.Unlock()
	n := 0
	for _, f := range built.list {
		if f.name == name {
			n++
		}
	}
	return n
}

type fakeBuilder struct{ kind string }

func (b fakeBuilder) Kind() string { return b.kind }

// Build fails for a cluster whose first endpoint is "fail" or a sidecar
// cluster of the app id "unbuildable"; a cluster whose first endpoint is
// "closefail" fails to close.
func (b fakeBuilder) Build(c config.Cluster, env Env) (Cluster, error) {
	if (len(c.Endpoints) > 0 && c.Endpoints[0] == "fail") || c.AppID == "unbuildable" {
		return nil, errors.New("fake: refused")
	}
	if strings.HasPrefix(c.AppID, "slow") {
		time.Sleep(20 * time.Millisecond) // a slow build, so that concurrent first uses overlap
	}
	f := &fake{name: c.Name, cfg: c, env: env}
	if len(c.Endpoints) > 0 && c.Endpoints[0] == "closefail" {
		f.closeErr = fmt.Errorf("fake: %s: close failed", c.Name)
	}
	return record(f), nil
}

type fakeComponents struct{}

func (fakeComponents) Category() string { return "fakecat" }

// Build fails when the component's metadata says fail: "true".
func (fakeComponents) Build(ctx context.Context, c config.Component, env Env) (Cluster, error) {
	if c.Metadata["fail"] == "true" {
		return nil, errors.New("fake: cannot connect")
	}
	_, dl := ctx.Deadline()
	return record(&fake{name: c.Name, comp: c, env: env, deadline: dl}), nil
}

func resetBuilt(t *testing.T) {
	t.Helper()
	built.mu.Lock()
	built.list = nil
	built.mu.Unlock()
}

// cluster returns the fake behind name in s.
func cluster(t *testing.T, s *Set, name string) *fake {
	t.Helper()
	h := s.Cluster(name)
	f, ok := h.(*fake)
	if !ok {
		t.Fatalf("cluster %q is %T, want a fake", name, h)
	}
	return f
}

func fakeCluster(name string, endpoints ...string) config.Cluster {
	if len(endpoints) == 0 {
		endpoints = []string{"10.0.0.1:80"}
	}
	return config.Cluster{Name: name, Kind: fakeKind, Endpoints: endpoints}
}

func apply(t *testing.T, m *Manager, cfg *config.Config, env Env) *Set {
	t.Helper()
	p, err := m.Prepare(context.Background(), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	p.Commit()
	return p.Set
}

// eventually polls cond until it holds or 5 s passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var env = Env{AppID: "orders", AppAPIToken: "app-secret"}

func TestLocalApp(t *testing.T) {
	cases := []struct {
		name string
		cfg  config.Config
		want config.Cluster
		ok   bool
	}{
		{"no app port", config.Config{AppID: "orders"}, config.Cluster{}, false},
		{"http app", config.Config{AppPort: 3000, AppMaxConcurrency: 10, AppPipelineConns: 2},
			config.Cluster{Name: "app", Kind: "http", Endpoints: []string{"127.0.0.1:3000"}, MaxConcurrency: 10, PipelineConns: 2}, true},
		{"grpc app on another address", config.Config{AppPort: 50051, AppProtocol: "grpc", AppChannelAddress: "10.0.0.9"},
			config.Cluster{Name: "app", Kind: "grpc", Endpoints: []string{"10.0.0.9:50051"}}, true},
		{"ipv6 channel address", config.Config{AppPort: 8080, AppChannelAddress: "::1"},
			config.Cluster{Name: "app", Kind: "http", Endpoints: []string{"[::1]:8080"}}, true},
		{"negative max concurrency is unlimited", config.Config{AppPort: 3000, AppMaxConcurrency: -1},
			config.Cluster{Name: "app", Kind: "http", Endpoints: []string{"127.0.0.1:3000"}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := LocalApp(&tc.cfg)
			if ok != tc.ok || got.Name != tc.want.Name || got.Kind != tc.want.Kind || !slices.Equal(got.Endpoints, tc.want.Endpoints) ||
				got.MaxConcurrency != tc.want.MaxConcurrency || got.PipelineConns != tc.want.PipelineConns {
				t.Fatalf("LocalApp = %+v %v, want %+v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestRegisterPanics(t *testing.T) {
	cases := []struct {
		name string
		fn   func()
	}{
		{"duplicate kind", func() { RegisterKind(httpKind{}) }},
		{"empty kind", func() { RegisterKind(fakeBuilder{""}) }},
		{"duplicate category", func() { RegisterComponents(fakeComponents{}) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tc.fn()
		})
	}
}

// TestPrepareCommit: a plan builds every cluster (the local app included)
// but serves nothing until Commit; then its Set is current.
func TestPrepareCommit(t *testing.T) {
	resetBuilt(t)
	m := NewManager(nil, time.Hour)
	defer m.Close()
	cfg := &config.Config{AppID: "orders", AppPort: 3000, Clusters: []config.Cluster{
		fakeCluster("billing"),
		{Name: "reports", Endpoints: []string{"10.0.0.7:8080"}}, // no kind: http
	}}
	p, err := m.Prepare(context.Background(), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	if m.Current() != nil {
		t.Fatal("a prepared plan is current before Commit")
	}
	s := p.Set
	if got := s.Names(); !slices.Equal(got, []string{"app", "billing", "reports"}) {
		t.Fatalf("Names() = %v", got)
	}
	f := cluster(t, s, "billing")
	if f.env.AppID != "orders" || f.env.AppAPIToken != "app-secret" || f.env.Config != cfg || f.env.Logger == nil {
		t.Fatalf("builder got env %+v", f.env)
	}
	if _, ok := s.Cluster("reports").(*httpcluster.Cluster); !ok {
		t.Fatalf("a cluster without a kind is %T, want an HTTP cluster", s.Cluster("reports"))
	}
	if s.Cluster("nope") != nil {
		t.Fatal("an unknown cluster name resolved")
	}
	local, err := s.App([]byte("orders"))
	if err != nil || local != s.Cluster(config.LocalAppCluster) || local == nil {
		t.Fatalf("App(own id) = %v %v, want the local app cluster", local, err)
	}
	p.Commit()
	if m.Current() != s {
		t.Fatal("Commit did not make the plan's Set current")
	}
}

// TestUnchangedClustersSurvive: a new snapshot keeps the clusters whose
// settings did not change (same instance, not rebuilt, not closed) and
// builds the rest.
func TestUnchangedClustersSurvive(t *testing.T) {
	resetBuilt(t)
	m := NewManager(nil, time.Hour)
	defer m.Close()
	s1 := apply(t, m, &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("kept"), fakeCluster("changed")}}, env)
	s2 := apply(t, m, &config.Config{AppID: "orders", Clusters: []config.Cluster{
		fakeCluster("kept"), fakeCluster("changed", "10.0.0.2:80"), fakeCluster("added"),
	}}, env)
	if cluster(t, s2, "kept") != cluster(t, s1, "kept") || builds("kept") != 1 {
		t.Fatalf("an unchanged cluster was rebuilt (%d builds)", builds("kept"))
	}
	if cluster(t, s2, "changed") == cluster(t, s1, "changed") || builds("changed") != 2 {
		t.Fatal("a changed cluster was not rebuilt")
	}
	if got := cluster(t, s2, "changed").cfg.Endpoints; !slices.Equal(got, []string{"10.0.0.2:80"}) {
		t.Fatalf("rebuilt with %v", got)
	}
	if builds("added") != 1 {
		t.Fatal("a new cluster was not built")
	}
	if cluster(t, s1, "kept").closed.Load() != 0 {
		t.Fatal("a kept cluster was closed")
	}
}

// TestEnvChangeRebuilds: clusters carry the app id and app token, so a
// change of either rebuilds them all, even with the same cluster config.
func TestEnvChangeRebuilds(t *testing.T) {
	cases := []struct {
		name string
		next Env
	}{
		{"app token", Env{AppID: "orders", AppAPIToken: "rotated"}},
		{"app id", Env{AppID: "orders-v2", AppAPIToken: "app-secret"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resetBuilt(t)
			m := NewManager(nil, time.Hour)
			defer m.Close()
			cfg := &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("a")}}
			s1 := apply(t, m, cfg, env)
			s2 := apply(t, m, cfg, tc.next)
			if builds("a") != 2 || cluster(t, s2, "a") == cluster(t, s1, "a") {
				t.Fatalf("%d builds: the cluster was kept across an env change", builds("a"))
			}
			if got := cluster(t, s2, "a").env; got.AppID != tc.next.AppID || got.AppAPIToken != tc.next.AppAPIToken {
				t.Fatalf("rebuilt with env %+v", got)
			}
		})
	}
}

// TestRetirement: clusters a commit removed or replaced stay open for the
// drain period (requests may still use them), then are closed once; the
// ones still in use are never closed.
func TestRetirement(t *testing.T) {
	cfg1 := &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("kept"), fakeCluster("changed"), fakeCluster("removed")},
		Components: []config.Component{{Name: "ps", Type: "fakecat.x"}, {Name: "gone", Type: "fakecat.x"}}}
	cfg2 := &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("kept"), fakeCluster("changed", "10.0.0.2:80")},
		Components: []config.Component{{Name: "ps", Type: "fakecat.x"}}}

	t.Run("closed once after the drain", func(t *testing.T) {
		const drain = 100 * time.Millisecond
		m := NewManager(nil, drain)
		defer m.Close()
		s1 := apply(t, m, cfg1, env)
		committed := time.Now()
		s2 := apply(t, m, cfg2, env)
		retired := []*fake{cluster(t, s1, "changed"), cluster(t, s1, "removed"), s1.PubSub([]byte("gone")).(*fake)}
		eventually(t, "retired clusters to close", func() bool {
			for _, f := range retired {
				if f.closed.Load() == 0 {
					return false
				}
			}
			return true
		})
		for _, f := range retired {
			if n := f.closed.Load(); n != 1 {
				t.Errorf("%s closed %d times", f.name, n)
			}
			if open := time.Duration(f.closedAt.Load() - committed.UnixNano()); open < drain {
				t.Errorf("%s closed %v after the commit, before the %v drain ended", f.name, open, drain)
			}
		}
		for _, f := range []*fake{cluster(t, s2, "kept"), cluster(t, s2, "changed"), s2.PubSub([]byte("ps")).(*fake)} {
			if f.closed.Load() != 0 {
				t.Errorf("%s is in use and was closed", f.name)
			}
		}
	})

	t.Run("close errors are logged", func(t *testing.T) {
		core, logs := observer.New(zapcore.WarnLevel)
		m := NewManager(zap.New(core), time.Millisecond)
		defer m.Close()
		apply(t, m, &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("bad", "closefail")}}, env)
		apply(t, m, &config.Config{AppID: "orders"}, env)
		eventually(t, "the close error to be logged", func() bool {
			return logs.FilterMessage("closing a retired cluster").Len() == 1
		})
		e := logs.FilterMessage("closing a retired cluster").All()[0]
		if !strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "bad: close failed") {
			t.Fatalf("logged %v", e.ContextMap())
		}
	})
}

// TestPrepareFailure: a plan that cannot build leaves nothing behind (what
// it built is closed) and the current clusters untouched and still used.
func TestPrepareFailure(t *testing.T) {
	cases := []struct {
		name    string
		cfg     *config.Config
		wantErr string
	}{
		{"cluster build fails", &config.Config{AppID: "orders", Clusters: []config.Cluster{
			fakeCluster("a", "10.0.0.2:80"), fakeCluster("fresh"), fakeCluster("broken", "fail"),
		}}, "clusters: broken: fake: refused"},
		{"unknown kind", &config.Config{AppID: "orders", Clusters: []config.Cluster{
			fakeCluster("a", "10.0.0.2:80"), fakeCluster("fresh"), {Name: "odd", Kind: "nope", Endpoints: []string{"x:1"}},
		}}, `clusters: odd: kind "nope" is not available in this build`},
		{"component fails", &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("a", "10.0.0.2:80"), fakeCluster("fresh")},
			Components: []config.Component{{Name: "ps", Type: "fakecat.x", Metadata: map[string]string{"fail": "true"}}},
		}, "clusters: component ps (fakecat.x): fake: cannot connect"},
		{"component type unknown", &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("a", "10.0.0.2:80"), fakeCluster("fresh")},
			Components: []config.Component{{Name: "st", Type: "state.redis"}},
		}, "clusters: component st: type state.redis is not available in this build"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resetBuilt(t)
			m := NewManager(nil, time.Millisecond)
			defer m.Close()
			cur := &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("a")}}
			s1 := apply(t, m, cur, env)
			old := cluster(t, s1, "a")

			p, err := m.Prepare(context.Background(), tc.cfg, env)
			if err == nil || p != nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Prepare = %v, %v; want the error %q", p, err, tc.wantErr)
			}
			built.mu.Lock()
			var fresh []*fake
			for _, f := range built.list {
				if f != old {
					fresh = append(fresh, f)
				}
			}
			built.mu.Unlock()
			if len(fresh) < 2 {
				t.Fatalf("only %d clusters were built before the failure", len(fresh))
			}
			for _, f := range fresh {
				if f.closed.Load() != 1 {
					t.Errorf("%s, built by the failed plan, closed %d times", f.name, f.closed.Load())
				}
			}
			if m.Current() != s1 {
				t.Fatal("a failed Prepare changed the current Set")
			}
			if old.closed.Load() != 0 {
				t.Fatal("a failed Prepare closed a current cluster")
			}
			// The manager still holds the current cluster: the same config
			// again reuses it.
			again := apply(t, m, cur, env)
			if cluster(t, again, "a") != old || builds("a") != 2 {
				t.Fatal("the current cluster was not kept after a failed Prepare")
			}
		})
	}
}

// TestAbort: aborting a plan closes what it built, not what it shares with
// the current snapshot, which stays current.
func TestAbort(t *testing.T) {
	resetBuilt(t)
	m := NewManager(nil, time.Hour)
	defer m.Close()
	s1 := apply(t, m, &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("kept"), fakeCluster("changed")}}, env)
	remote, err := s1.App([]byte("billing"))
	if err != nil {
		t.Fatal(err)
	}
	// A name resolution change gives the plan its own sidecar clusters.
	env2 := env
	env2.NameResolution = config.NameResolution{Scheme: "dns"}
	p, err := m.Prepare(context.Background(), &config.Config{AppID: "orders", Clusters: []config.Cluster{
		fakeCluster("kept"), fakeCluster("changed", "10.0.0.2:80"), fakeCluster("new"),
	}, Components: []config.Component{{Name: "ps", Type: "fakecat.x"}}}, env2)
	if err != nil {
		t.Fatal(err)
	}
	planRemote, err := p.Set.App([]byte("billing"))
	if err != nil || planRemote == remote {
		t.Fatalf("the plan shares the sidecar clusters of another name resolution (%v)", err)
	}
	fresh := []*fake{cluster(t, p.Set, "changed"), cluster(t, p.Set, "new"), p.Set.PubSub([]byte("ps")).(*fake), planRemote.(*fake)}
	p.Abort()
	for _, f := range fresh {
		if f.closed.Load() != 1 {
			t.Errorf("%s, built by the aborted plan, closed %d times", f.name, f.closed.Load())
		}
	}
	for _, f := range []*fake{cluster(t, s1, "kept"), cluster(t, s1, "changed"), remote.(*fake)} {
		if f.closed.Load() != 0 {
			t.Errorf("%s, current, was closed by Abort", f.name)
		}
	}
	if m.Current() != s1 {
		t.Fatal("Abort changed the current Set")
	}
	if got, _ := m.Current().App([]byte("billing")); got != remote {
		t.Fatal("the current sidecar clusters were replaced")
	}
}

// TestComponents: components are built with their init timeout, listed for
// the metadata API, kept when unchanged, and skipped on error when
// ignoreErrors is set.
func TestComponents(t *testing.T) {
	resetBuilt(t)
	m := NewManager(nil, time.Hour)
	defer m.Close()
	cfg := &config.Config{AppID: "orders", Components: []config.Component{
		{Name: "zeta", Type: "fakecat.redis", Version: "v1", InitTimeout: config.Duration(time.Second)},
		{Name: "alpha", Type: "fakecat.nats", Version: "v2"},
		{Name: "skipped-type", Type: "bindings.kafka", IgnoreErrors: true},
		{Name: "skipped-init", Type: "fakecat.redis", IgnoreErrors: true, Metadata: map[string]string{"fail": "true"}},
	}}
	s := apply(t, m, cfg, env)
	want := []ComponentInfo{
		{Name: "alpha", Type: "fakecat.nats", Version: "v2", Capabilities: []string{"BULK_PUBLISH"}},
		{Name: "zeta", Type: "fakecat.redis", Version: "v1", Capabilities: []string{"BULK_PUBLISH"}},
	}
	got := s.Components()
	if len(got) != len(want) {
		t.Fatalf("Components() = %+v", got)
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Type != want[i].Type || got[i].Version != want[i].Version || !slices.Equal(got[i].Capabilities, want[i].Capabilities) {
			t.Fatalf("Components()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	zeta, ok := s.PubSub([]byte("zeta")).(*fake)
	if !ok || !zeta.deadline {
		t.Fatal("a component with init_timeout was built without a deadline")
	}
	if alpha := s.PubSub([]byte("alpha")).(*fake); alpha.deadline {
		t.Fatal("a component without init_timeout was built with a deadline")
	}
	for _, n := range []string{"skipped-type", "skipped-init", "nope"} {
		if s.PubSub([]byte(n)) != nil {
			t.Errorf("PubSub(%q) is set", n)
		}
	}
	s2 := apply(t, m, cfg, env)
	if s2.PubSub([]byte("zeta")) != zeta || builds("zeta") != 1 {
		t.Fatal("an unchanged component was rebuilt")
	}
}

// TestSidecarClusters: the cluster of a remote app id is built on first
// use, once, and then shared; an empty or unbuildable id is a Dapr error.
func TestSidecarClusters(t *testing.T) {
	resetBuilt(t)
	m := NewManager(nil, time.Hour)
	defer m.Close()
	s := apply(t, m, &config.Config{AppID: "orders"}, env)
	if got := s.RemoteApps(); len(got) != 0 {
		t.Fatalf("RemoteApps() = %v before any use", got)
	}
	h, err := s.App([]byte("billing"))
	if err != nil {
		t.Fatal(err)
	}
	f := h.(*fake)
	if f.cfg.Name != "sidecar:billing" || f.cfg.Kind != config.ClusterSidecar || f.cfg.AppID != "billing" || f.env.AppID != "orders" {
		t.Fatalf("built %+v with env app id %q", f.cfg, f.env.AppID)
	}
	if again, _ := s.App([]byte("billing")); again != h || builds("sidecar:billing") != 1 {
		t.Fatal("a remote app's cluster was built twice")
	}
	if got := s.RemoteApps(); !slices.Equal(got, []string{"billing"}) {
		t.Fatalf("RemoteApps() = %v", got)
	}

	errCases := []struct {
		name   string
		id     string
		code   codes.Code
		status int
		msg    string
	}{
		{"empty id", "", codes.InvalidArgument, http.StatusBadRequest, "failed to invoke: app id is empty"},
		{"unbuildable", "unbuildable", codes.Unavailable, http.StatusInternalServerError, "failed to invoke, id: unbuildable, err: fake: refused"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := s.App([]byte(tc.id))
			var e *filters.Error
			if h != nil || !errors.As(err, &e) {
				t.Fatalf("App(%q) = %v, %v", tc.id, h, err)
			}
			if e.Code != filters.ErrCodeDirectInvoke || e.GRPCCode != tc.code || e.HTTPStatus != tc.status || e.Message != tc.msg {
				t.Fatalf("error %s/%v/%d %q", e.Code, e.GRPCCode, e.HTTPStatus, e.Message)
			}
		})
	}
	if slices.Contains(s.RemoteApps(), "unbuildable") {
		t.Fatal("a failed build was kept")
	}

	t.Run("concurrent first use builds once", func(t *testing.T) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		got := make([]filters.Handler, 16)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got[i], _ = s.App([]byte("slow-shipping"))
			}()
		}
		close(start)
		wg.Wait()
		for _, h := range got {
			if h == nil || h != got[0] {
				t.Fatal("concurrent first uses got different clusters")
			}
		}
		if n := builds("sidecar:slow-shipping"); n != 1 {
			t.Fatalf("built %d times", n)
		}
	})
}

// TestSidecarClustersAcrossSnapshots: sidecar clusters survive a snapshot
// with the same env and name resolution; a new name resolution gets new
// ones and retires the old after the drain.
func TestSidecarClustersAcrossSnapshots(t *testing.T) {
	resetBuilt(t)
	m := NewManager(nil, 10*time.Millisecond)
	defer m.Close()
	cfg := &config.Config{AppID: "orders"}
	s1 := apply(t, m, cfg, env)
	first, _ := s1.App([]byte("billing"))

	s2 := apply(t, m, cfg, env)
	if got, _ := s2.App([]byte("billing")); got != first || builds("sidecar:billing") != 1 {
		t.Fatal("a snapshot with the same env rebuilt the sidecar clusters")
	}

	env3 := env
	env3.NameResolution = config.NameResolution{Scheme: "static", Config: map[string]any{"billing": "10.0.0.3:50002"}}
	s3 := apply(t, m, cfg, env3)
	second, _ := s3.App([]byte("billing"))
	if second == first || builds("sidecar:billing") != 2 {
		t.Fatal("a new name resolution kept the old sidecar clusters")
	}
	eventually(t, "the old sidecar cluster to close", func() bool { return first.(*fake).closed.Load() == 1 })
	if second.(*fake).closed.Load() != 0 {
		t.Fatal("the current sidecar cluster was closed")
	}
}

// TestNoSidecarKind: a build without sidecar clusters answers invocations
// of other app ids with a Dapr error instead of failing to build.
func TestNoSidecarKind(t *testing.T) {
	old := kinds
	kinds = registry.New[Builder]("clusters", "kind")
	for _, n := range old.Names() {
		if b, _ := old.Get(n); n != config.ClusterSidecar {
			kinds.Register(n, b)
		}
	}
	t.Cleanup(func() { kinds = old })

	m := NewManager(nil, time.Hour)
	defer m.Close()
	s := apply(t, m, &config.Config{AppID: "orders"}, env)
	h, err := s.App([]byte("billing"))
	var e *filters.Error
	if h != nil || !errors.As(err, &e) || e.GRPCCode != codes.Unimplemented || e.Code != filters.ErrCodeDirectInvoke ||
		!strings.Contains(e.Message, "this build does not include") {
		t.Fatalf("App = %v, %v", h, err)
	}
}

// TestNoAppChannel: invoking our own id with no app port is daprd's error.
func TestNoAppChannel(t *testing.T) {
	m := NewManager(nil, time.Hour)
	defer m.Close()
	s := apply(t, m, &config.Config{AppID: "orders"}, env)
	h, err := s.App([]byte("orders"))
	if h != nil || !errors.Is(err, ErrNoAppChannel) {
		t.Fatalf("App(own id) = %v, %v; want ErrNoAppChannel", h, err)
	}
	if ErrNoAppChannel.HTTPStatus != 500 || ErrNoAppChannel.Code != filters.ErrCodeDirectInvoke {
		t.Fatalf("ErrNoAppChannel = %+v", ErrNoAppChannel)
	}
}

// TestManagerClose closes every cluster, component and sidecar cluster at
// once and reports close errors.
func TestManagerClose(t *testing.T) {
	resetBuilt(t)
	m := NewManager(nil, time.Hour)
	s := apply(t, m, &config.Config{AppID: "orders",
		Clusters:   []config.Cluster{fakeCluster("a"), fakeCluster("bad", "closefail")},
		Components: []config.Component{{Name: "ps", Type: "fakecat.x"}},
	}, env)
	remote, _ := s.App([]byte("billing"))
	err := m.Close()
	if err == nil || !strings.Contains(err.Error(), "bad: close failed") {
		t.Fatalf("Close = %v, want the failed close reported", err)
	}
	for _, f := range []*fake{cluster(t, s, "a"), cluster(t, s, "bad"), s.PubSub([]byte("ps")).(*fake), remote.(*fake)} {
		if f.closed.Load() != 1 {
			t.Errorf("%s closed %d times", f.name, f.closed.Load())
		}
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestConcurrentUse: Sets are read lock-free while snapshots are committed
// (run with -race).
func TestConcurrentUse(t *testing.T) {
	m := NewManager(nil, time.Millisecond)
	defer m.Close()
	apply(t, m, &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("a")}}, env)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := m.Current()
				if s.Cluster("a") == nil {
					t.Error("cluster a missing from a committed Set")
					return
				}
				if _, err := s.App([]byte(fmt.Sprint("app-", r))); err != nil {
					t.Error(err)
					return
				}
				_ = s.RemoteApps()
			}
		}()
	}
	for i := range 50 {
		apply(t, m, &config.Config{AppID: "orders", Clusters: []config.Cluster{fakeCluster("a", fmt.Sprintf("10.0.0.%d:80", i%3))}}, env)
	}
	close(stop)
	wg.Wait()
}

// TestSetAppAllocatesNothing: resolving the local app or a known remote
// app on the hot path allocates nothing.
func TestSetAppAllocatesNothing(t *testing.T) {
	m := NewManager(nil, time.Hour)
	defer m.Close()
	s := apply(t, m, &config.Config{AppID: "orders", AppPort: 3000}, env)
	own, remote := []byte("orders"), []byte("billing")
	if _, err := s.App(remote); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(100, func() {
		if _, err := s.App(own); err != nil {
			t.Fatal(err)
		}
		if _, err := s.App(remote); err != nil {
			t.Fatal(err)
		}
		_ = s.Cluster("app")
	})
	if n != 0 {
		t.Fatalf("App allocates %v times", n)
	}
}

func BenchmarkSetApp(b *testing.B) {
	m := NewManager(nil, time.Hour)
	defer m.Close()
	p, err := m.Prepare(context.Background(), &config.Config{AppID: "orders", AppPort: 3000}, env)
	if err != nil {
		b.Fatal(err)
	}
	p.Commit()
	s := m.Current()
	ids := [][]byte{[]byte("orders"), []byte("billing"), []byte("shipping")}
	for _, id := range ids {
		if _, err := s.App(id); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, _ = s.App(ids[i%len(ids)])
			i++
		}
	})
}
