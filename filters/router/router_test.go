package router

import (
	"context"
	"errors"
	"testing"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

type rec struct {
	name string
	hits *[]string
}

func (r rec) Handle(_ context.Context, ex *filters.Exchange) error {
	*r.hits = append(*r.hits, r.name)
	return nil
}

type fakeClusters struct {
	named map[string]filters.Handler
	self  string
	hits  *[]string
}

func (f *fakeClusters) Cluster(name string) filters.Handler { return f.named[name] }
func (f *fakeClusters) App(id []byte) (filters.Handler, error) {
	if string(id) == f.self {
		return f.named[config.LocalAppCluster], nil
	}
	if string(id) == "unknown" {
		return nil, errors.New("no such app")
	}
	return rec{"sidecar:" + string(id), f.hits}, nil
}
func (f *fakeClusters) PubSub(name []byte) filters.Handler {
	if string(name) == "pubsub" {
		return rec{"pubsub:pubsub", f.hits}
	}
	return nil
}

func newFake() *fakeClusters {
	hits := new([]string)
	f := &fakeClusters{self: "orders", hits: hits, named: map[string]filters.Handler{}}
	for _, n := range []string{"app", "v1", "v2", "canary", "glob", "regex", "verbs"} {
		f.named[n] = rec{n, hits}
	}
	return f
}

var table = []config.Route{
	{Name: "canary", Match: config.RouteMatch{Prefix: "/invoke/orders/", Headers: []config.HeaderMatch{{Name: "x-canary", Exact: "1"}}}, Cluster: "canary"},
	{Name: "verbs", Match: config.RouteMatch{Exact: "/invoke/orders/method/admin", Verbs: []string{"delete"}}, Cluster: "verbs"},
	{Name: "glob", Match: config.RouteMatch{Glob: "/invoke/*/method/v*/**"}, Cluster: "glob"},
	{Name: "regex", Match: config.RouteMatch{Regex: `^/invoke/orders/method/items/[0-9]+$`}, Cluster: "regex"},
	{Name: "split", Match: config.RouteMatch{Exact: "/invoke/orders/method/split"}, WeightedClusters: []config.WeightedCluster{{Name: "v1", Weight: 1}, {Name: "v2", Weight: 3}}},
	{Name: "timeout-only", Match: config.RouteMatch{Exact: "/invoke/orders/method/slow"}, Timeout: config.Duration(5e9), Idempotent: true},
}

func exchange(verb, app, method string, hdr ...string) *filters.Exchange {
	ex := filters.AcquireExchange(true)
	ex.Req.Header.SetMethod(verb)
	for i := 0; i+1 < len(hdr); i += 2 {
		ex.Req.Header.Set(hdr[i], hdr[i+1])
	}
	ex.SetInvoke([]byte(app), []byte(method))
	return ex
}

func TestRoutes(t *testing.T) {
	cases := []struct {
		name   string
		verb   string
		app    string
		method string
		hdr    []string
		want   string
	}{
		{"header match wins first", "POST", "orders", "neworder", []string{"x-canary", "1"}, "canary"},
		{"header mismatch falls through to default local", "POST", "orders", "neworder", []string{"x-canary", "2"}, "app"},
		{"verb match", "DELETE", "orders", "admin", nil, "verbs"},
		{"verb mismatch uses default", "GET", "orders", "admin", nil, "app"},
		{"glob across segments", "GET", "billing", "v2/a/b/c", nil, "glob"},
		{"glob needs the v prefix", "GET", "billing", "x2/a", nil, "sidecar:billing"},
		{"regex", "GET", "orders", "items/42", nil, "regex"},
		{"regex anchored", "GET", "orders", "items/42/x", nil, "app"},
		{"default other app id", "POST", "billing", "pay", nil, "sidecar:billing"},
		{"route without cluster keeps the default target", "GET", "orders", "slow", nil, "app"},
	}
	f := newFake()
	r, err := New(table, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			*f.hits = (*f.hits)[:0]
			ex := exchange(tc.verb, tc.app, tc.method, tc.hdr...)
			defer filters.ReleaseExchange(ex)
			if err := r.Handle(context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			if len(*f.hits) != 1 || (*f.hits)[0] != tc.want {
				t.Fatalf("routed to %v, want %s", *f.hits, tc.want)
			}
		})
	}
}

func TestRouteSetsTimeoutAndIdempotency(t *testing.T) {
	f := newFake()
	r, _ := New(table, f)
	ex := exchange("GET", "orders", "slow")
	defer filters.ReleaseExchange(ex)
	if err := r.Handle(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	if ex.Timeout != 5e9 || !ex.Idempotent || ex.Route == nil || ex.Route.Name != "timeout-only" {
		t.Fatalf("timeout %v idempotent %v route %+v", ex.Timeout, ex.Idempotent, ex.Route)
	}
}

func TestWeightedSplit(t *testing.T) {
	f := newFake()
	r, _ := New(table, f)
	n := map[string]int{}
	for i := 0; i < 4000; i++ {
		*f.hits = (*f.hits)[:0]
		ex := exchange("POST", "orders", "split")
		if err := r.Handle(context.Background(), ex); err != nil {
			t.Fatal(err)
		}
		n[(*f.hits)[0]]++
		filters.ReleaseExchange(ex)
	}
	// expect 1:3; allow wide bounds (binomial, n=4000: sd ~27)
	if n["v1"] < 850 || n["v1"] > 1150 || n["v2"] < 2850 || n["v2"] > 3150 {
		t.Fatalf("split %v, want about 1000/3000", n)
	}
}

func TestDefaults(t *testing.T) {
	f := newFake()
	r, _ := New(nil, f)
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)

	ex.SetPublish(false, []byte("pubsub"), []byte("orders/created"))
	*f.hits = (*f.hits)[:0]
	if err := r.Handle(context.Background(), ex); err != nil || (*f.hits)[0] != "pubsub:pubsub" {
		t.Fatalf("publish: %v %v", err, *f.hits)
	}
	ex.SetPublish(false, []byte("nope"), []byte("t"))
	err := r.Handle(context.Background(), ex)
	var fe *filters.Error
	if !errors.As(err, &fe) || fe.Code != filters.ErrCodePubSubNotFound || fe.HTTPStatus != 404 {
		t.Fatalf("unknown pubsub: %v", err)
	}
	ex.SetPublish(true, []byte("pubsub"), []byte("t"))
	*f.hits = (*f.hits)[:0]
	if err := r.Handle(context.Background(), ex); err != nil || (*f.hits)[0] != "app" {
		t.Fatalf("deliver: %v %v", err, *f.hits)
	}
	ex.SetInvoke([]byte("unknown"), []byte("m"))
	if err := r.Handle(context.Background(), ex); err == nil {
		t.Fatal("resolver error not returned")
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name string
		r    config.Route
		want string
	}{
		{"two matchers", config.Route{Match: config.RouteMatch{Exact: "/a", Prefix: "/b"}}, "set only one of"},
		{"bad regex", config.Route{Match: config.RouteMatch{Regex: "("}}, "regex"},
		{"missing cluster", config.Route{Cluster: "nope"}, `cluster "nope" is not defined`},
		{"zero weights", config.Route{WeightedClusters: []config.WeightedCluster{{Name: "v1"}}}, "all weights are 0"},
		{"header without name", config.Route{Match: config.RouteMatch{Headers: []config.HeaderMatch{{Exact: "x"}}}}, "name is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New([]config.Route{tc.r}, newFake())
			if err == nil || !contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func contains(s, sub string) bool { return len(sub) == 0 || (len(s) >= len(sub) && index(s, sub) >= 0) }
func index(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestGlob(t *testing.T) {
	cases := []struct {
		glob, key string
		want      bool
	}{
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/x/c", false},
		{"a/**", "a/b/x/c", true},
		{"a/**/c", "a/c", true},
		{"a/**/c", "a/x/y/c", true},
		{"a/b*d/c", "a/bxxd/c", true},
		{"a/b*d/c", "a/bxxe/c", false},
		{"*", "abc", true},
		{"*", "a/b", false},
	}
	for _, tc := range cases {
		t.Run(tc.glob+"~"+tc.key, func(t *testing.T) {
			m, err := compileKey(config.RouteMatch{Glob: tc.glob})
			if err != nil {
				t.Fatal(err)
			}
			if got := m.match([]byte(tc.key)); got != tc.want {
				t.Fatalf("got %v", got)
			}
		})
	}
}

// noop is a cluster that does nothing, to measure the router alone.
type noop struct{}

func (noop) Handle(context.Context, *filters.Exchange) error { return nil }

type noopClusters struct{}

func (noopClusters) Cluster(string) filters.Handler      { return noop{} }
func (noopClusters) App([]byte) (filters.Handler, error) { return noop{}, nil }
func (noopClusters) PubSub([]byte) filters.Handler       { return noop{} }

func TestRouteMatchAllocatesNothing(t *testing.T) {
	r, err := New(table, noopClusters{})
	if err != nil {
		t.Fatal(err)
	}
	ex := exchange("POST", "orders", "items/42", "x-canary", "0")
	defer filters.ReleaseExchange(ex)
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { _ = r.Handle(ctx, ex) }); n != 0 {
		t.Fatalf("route match allocates %v per request", n)
	}
}

func BenchmarkRouter(b *testing.B) {
	r, _ := New(table, noopClusters{})
	ex := exchange("POST", "orders", "items/42", "x-canary", "0")
	defer filters.ReleaseExchange(ex)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Handle(ctx, ex)
	}
}
