package admin

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/memory"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsubcluster"
	"github.com/switchyard-proxy/switchyard/config"
	_ "github.com/switchyard-proxy/switchyard/filters/apitoken"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/listeners"
	_ "github.com/switchyard-proxy/switchyard/listeners/http"
)

// Secrets the configuration carries; none may appear in /config_dump.
var secrets = []string{"api-s3cret", "app-s3cret", "filter-s3cret", "filter-pw-s3cret", "comp-s3cret", "comp-token-s3cret", "consul-s3cret"}

func testConfig() *config.Config {
	return &config.Config{
		AppID: "orders", AppPort: 1, AppProtocol: "http", AppChannelAddress: "127.0.0.1",
		APIToken: "api-s3cret", AppAPIToken: "app-s3cret",
		Listeners: []config.Listener{
			{Name: "admin", Kind: config.ListenerAdmin, Addresses: []string{"127.0.0.1:0"}},
			{Name: "dapr_http", Kind: config.ListenerHTTP, Addresses: []string{"127.0.0.1:0"},
				Filters: []config.FilterSpec{{Name: "apitoken", Config: map[string]any{"token": "filter-s3cret"}}}},
			// Not chained, so its filter settings are only dumped, never built.
			{Name: "metrics", Kind: config.ListenerMetrics, Addresses: []string{"127.0.0.1:0"},
				Filters: []config.FilterSpec{{Name: "anything", Config: map[string]any{"Password": "filter-pw-s3cret", "level": "info"}}}},
		},
		Clusters: []config.Cluster{{Name: "backend", Kind: config.ClusterHTTP, Endpoints: []string{"127.0.0.1:1"}}},
		Components: []config.Component{
			{Name: "messages", Type: "pubsub.in-memory", Version: "v1"},
			{Name: "events", Type: "pubsub.not-in-this-build", IgnoreErrors: true,
				Metadata: map[string]string{"redisHost": "localhost:6379", "redisPassword": "comp-s3cret", "token": "comp-token-s3cret"}},
		},
		NameResolution: config.NameResolution{Scheme: "consul", Config: map[string]any{"address": "127.0.0.1:8500", "token": "consul-s3cret"}},
	}
}

type env struct {
	rt       *listeners.Runtime
	mgr      *listeners.Manager
	snap     *config.Snapshot
	addr     string
	shutdown chan struct{}
}

func start(t *testing.T) *env {
	t.Helper()
	e := &env{shutdown: make(chan struct{}, 4)}
	e.rt = &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: stats.NewRegistry("dapr_"),
		Shutdown: func() { e.shutdown <- struct{}{} }}
	e.rt.Stats.Counter("admin_test_total", "A counter for the admin test.", "app_id").With("orders").Add(7)
	e.mgr = listeners.NewManager(e.rt, time.Second)
	t.Cleanup(func() { _ = e.mgr.Close(context.Background()) })
	e.snap = config.NewSnapshot(testConfig(), "test")
	if err := e.mgr.Apply(context.Background(), e.snap); err != nil {
		t.Fatal(err)
	}
	a := e.mgr.Addrs("admin")
	if len(a) != 1 {
		t.Fatalf("admin addresses %v", a)
	}
	e.addr = a[0]
	return e
}

type answer struct {
	code  int
	ctype string
	body  string
}

func do(t *testing.T, addr, method, path string, hdr ...string) answer {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return answer{resp.StatusCode(), string(resp.Header.ContentType()), string(resp.Body())}
}

func TestEndpoints(t *testing.T) {
	e := start(t)
	cases := []struct {
		name, method, path string
		code               int
		ctype              string
		contains           []string
	}{
		{"index", "GET", "/", 200, "text/plain", []string{"GET /config_dump", "POST /quitquitquit", "GET /debug/pprof/"}},
		{"help", "GET", "/help", 200, "text/plain", []string{"GET /ready"}},
		{"unknown path", "GET", "/no/such/endpoint", 404, "", nil},
		{"unknown path under a known one", "GET", "/readyz", 404, "", nil},
		{"stats", "GET", "/stats", 200, "text/plain; version=0.0.4", []string{"# TYPE dapr_admin_test_total counter\n", `dapr_admin_test_total{app_id="orders"} 7` + "\n"}},
		{"stats/prometheus", "GET", "/stats/prometheus", 200, "text/plain; version=0.0.4", []string{`dapr_admin_test_total{app_id="orders"} 7`}},
		{"metrics", "GET", "/metrics", 200, "text/plain; version=0.0.4", []string{`dapr_admin_test_total{app_id="orders"} 7`}},
		{"pprof index", "GET", "/debug/pprof/", 200, "", []string{"goroutine", "heap"}},
		{"pprof goroutines", "GET", "/debug/pprof/goroutine?debug=1", 200, "", []string{"goroutine profile:"}},
		{"logging needs POST", "GET", "/logging?level=debug", 405, "", nil},
		{"quitquitquit needs POST", "GET", "/quitquitquit", 405, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, e.addr, tc.method, tc.path)
			if a.code != tc.code {
				t.Fatalf("status %d, want %d (body %q)", a.code, tc.code, a.body)
			}
			if tc.ctype != "" && a.ctype != tc.ctype {
				t.Fatalf("content type %q, want %q", a.ctype, tc.ctype)
			}
			for _, s := range tc.contains {
				if !strings.Contains(a.body, s) {
					t.Fatalf("body lacks %q:\n%s", s, a.body)
				}
			}
		})
	}
	select {
	case <-e.shutdown:
		t.Fatal("GET /quitquitquit shut the sidecar down")
	default:
	}
}

func TestReady(t *testing.T) {
	e := start(t)
	if a := do(t, e.addr, "GET", "/ready"); a.code != 503 || a.body != "NOT READY\n" {
		t.Fatalf("before ready: %d %q", a.code, a.body)
	}
	e.rt.Health.SetOutboundReady(true)
	if a := do(t, e.addr, "GET", "/ready"); a.code != 503 {
		t.Fatalf("ready without the app: %d %q", a.code, a.body)
	}
	e.rt.Health.SetAppReady(true)
	if a := do(t, e.addr, "GET", "/ready"); a.code != 200 || a.body != "LIVE\n" {
		t.Fatalf("ready: %d %q", a.code, a.body)
	}
}

func TestListenersAndClusters(t *testing.T) {
	e := start(t)
	a := do(t, e.addr, "GET", "/listeners")
	if a.code != 200 || a.ctype != "application/json" {
		t.Fatalf("%d %q", a.code, a.ctype)
	}
	var ls []listeners.Info
	if err := json.Unmarshal([]byte(a.body), &ls); err != nil {
		t.Fatalf("%v: %s", err, a.body)
	}
	if len(ls) != 3 || ls[0].Name != "admin" || ls[0].Kind != "admin" || ls[1].Name != "dapr_http" || ls[2].Name != "metrics" {
		t.Fatalf("listeners %+v", ls)
	}
	for _, l := range ls {
		if got := e.mgr.Addrs(l.Name); len(l.Addresses) != 1 || l.Addresses[0] != got[0] {
			t.Fatalf("%s: addresses %v, bound %v", l.Name, l.Addresses, got)
		}
	}

	a = do(t, e.addr, "GET", "/clusters")
	var cl struct {
		Clusters   []string `json:"clusters"`
		RemoteApps []string `json:"remote_apps"`
		Components []struct{ Name, Type, Version string }
	}
	if a.code != 200 || json.Unmarshal([]byte(a.body), &cl) != nil {
		t.Fatalf("%d %s", a.code, a.body)
	}
	if strings.Join(cl.Clusters, ",") != "app,backend" {
		t.Fatalf("clusters %v", cl.Clusters)
	}
	if len(cl.Components) != 1 || cl.Components[0].Name != "messages" || cl.Components[0].Type != "pubsub.in-memory" {
		t.Fatalf("components %+v (the ignored one must not be listed)", cl.Components)
	}
}

// TestConfigDumpRedactsSecrets: /config_dump shows the served config with
// every secret it holds (API tokens, filter, component and name-resolution
// credentials) replaced, and leaves the served snapshot untouched.
func TestConfigDumpRedactsSecrets(t *testing.T) {
	e := start(t)
	a := do(t, e.addr, "GET", "/config_dump")
	if a.code != 200 || a.ctype != "application/json" {
		t.Fatalf("%d %q %s", a.code, a.ctype, a.body)
	}
	for _, s := range secrets {
		if strings.Contains(a.body, s) {
			t.Errorf("config_dump reveals %q", s)
		}
	}
	var dump struct {
		Version uint64
		Source  string
		Config  struct {
			AppID       string `json:"app_id"`
			APIToken    string `json:"api_token"`
			AppAPIToken string `json:"app_api_token"`
			Listeners   []struct {
				Name    string
				Filters []struct {
					Name   string
					Config map[string]any
				}
			}
			Components []struct {
				Name     string
				Metadata map[string]string
			}
			NameResolution struct {
				Scheme string
				Config map[string]any
			} `json:"name_resolution"`
		}
	}
	if err := json.Unmarshal([]byte(a.body), &dump); err != nil {
		t.Fatalf("%v: %s", err, a.body)
	}
	c := dump.Config
	if dump.Version != e.snap.Version || dump.Source != "test" || c.AppID != "orders" {
		t.Fatalf("version %d source %q app id %q", dump.Version, dump.Source, c.AppID)
	}
	const r = "[redacted]"
	checks := []struct {
		what      string
		got, want any
	}{
		{"api_token", c.APIToken, r},
		{"app_api_token", c.AppAPIToken, r},
		{"apitoken filter token", c.Listeners[1].Filters[0].Config["token"], r},
		{"a filter's Password", c.Listeners[2].Filters[0].Config["Password"], r},
		{"a filter's other settings", c.Listeners[2].Filters[0].Config["level"], "info"},
		{"component password", c.Components[1].Metadata["redisPassword"], r},
		{"component token", c.Components[1].Metadata["token"], r},
		{"component host", c.Components[1].Metadata["redisHost"], "localhost:6379"},
		{"name resolution token", c.NameResolution.Config["token"], r},
		{"name resolution address", c.NameResolution.Config["address"], "127.0.0.1:8500"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: %v, want %v", ch.what, ch.got, ch.want)
		}
	}

	// The served snapshot keeps its secrets.
	live := e.rt.Snapshot().Config
	want := testConfig()
	if live.APIToken != want.APIToken || live.AppAPIToken != want.AppAPIToken ||
		live.Listeners[1].Filters[0].Config["token"] != "filter-s3cret" ||
		live.Listeners[2].Filters[0].Config["Password"] != "filter-pw-s3cret" ||
		live.Components[1].Metadata["redisPassword"] != "comp-s3cret" ||
		live.NameResolution.Config["token"] != "consul-s3cret" {
		t.Fatalf("config_dump changed the served snapshot: %+v", live)
	}
	// And the API token filter still wants the real token.
	httpAddr := e.mgr.Addrs("dapr_http")[0]
	if a := do(t, httpAddr, "GET", "/v1.0/invoke/orders/method/x"); a.code != 401 {
		t.Fatalf("without the token: %d %s", a.code, a.body)
	}
	if a := do(t, httpAddr, "GET", "/v1.0/invoke/orders/method/x", "dapr-api-token", r); a.code != 401 {
		t.Fatalf("with the redacted placeholder as token: %d %s", a.code, a.body)
	}
	if a := do(t, httpAddr, "GET", "/v1.0/invoke/orders/method/x", "dapr-api-token", "filter-s3cret"); a.code == 401 {
		t.Fatalf("the real token is refused: %d %s", a.code, a.body)
	}
}

func TestLogging(t *testing.T) {
	e := start(t)
	old := Level
	t.Cleanup(func() { Level = old })

	Level = nil
	if a := do(t, e.addr, "POST", "/logging?level=debug"); a.code != 501 {
		t.Fatalf("without a level to change: %d", a.code)
	}
	lvl := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	Level = &lvl
	cases := []struct {
		query string
		code  int
		body  string
		want  zapcore.Level
	}{
		{"level=debug", 200, "level: debug\n", zapcore.DebugLevel},
		{"level=bogus", 400, "unrecognized level", zapcore.DebugLevel}, // unchanged
		{"level=warn", 200, "level: warn\n", zapcore.WarnLevel},
		{"level=ERROR", 200, "level: error\n", zapcore.ErrorLevel},
	}
	for _, tc := range cases {
		a := do(t, e.addr, "POST", "/logging?"+tc.query)
		if a.code != tc.code || !strings.Contains(a.body, tc.body) || lvl.Level() != tc.want {
			t.Fatalf("%s: %d %q level %v, want %d %q %v", tc.query, a.code, a.body, lvl.Level(), tc.code, tc.body, tc.want)
		}
	}
}

func TestQuitQuitQuit(t *testing.T) {
	e := start(t)
	if a := do(t, e.addr, "POST", "/quitquitquit"); a.code != 200 || a.body != "OK\n" {
		t.Fatalf("%d %q", a.code, a.body)
	}
	select {
	case <-e.shutdown:
	case <-time.After(10 * time.Second):
		t.Fatal("POST /quitquitquit did not ask for a shutdown")
	}
}

// TestBeforeTheFirstSnapshot: the admin listener started without a
// snapshot answers 503 for what needs one, rather than crashing.
func TestBeforeTheFirstSnapshot(t *testing.T) {
	rt := &listeners.Runtime{Logger: zap.NewNop(), Stats: stats.NewRegistry("dapr_")}
	l, err := factory{}.Start(config.Listener{Name: "admin", Kind: config.ListenerAdmin, Addresses: []string{"127.0.0.1:0"}}, nil, rt)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	addr := l.Addrs()[0].String()
	for _, p := range []string{"/config_dump", "/clusters", "/ready"} {
		if a := do(t, addr, "GET", p); a.code != 503 {
			t.Errorf("%s: %d %q, want 503", p, a.code, a.body)
		}
	}
	if a := do(t, addr, "GET", "/stats"); a.code != 200 {
		t.Errorf("/stats: %d", a.code)
	}
}
