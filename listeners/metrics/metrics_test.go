package metrics

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// checkExposition checks the Prometheus text format by hand (the format's
// library is not a dependency): comment lines are HELP or TYPE of a metric
// name, every sample belongs to the family of the last TYPE line, label
// values use only the \\ \" \n escapes, values are floats. It returns the
// samples as `name{labels}` -> value, labels as written.
func checkExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("exposition does not end with a line feed: %q", text)
	}
	out := map[string]float64{}
	family, typ := "", ""
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(why string) { t.Fatalf("line %d %q: %s\n%s", i+1, line, why, text) }
		if strings.HasPrefix(line, "# ") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 4 || (f[1] != "HELP" && f[1] != "TYPE") || !validName(f[2]) {
				fail("bad comment line")
			}
			if f[1] == "TYPE" {
				if f[3] != "counter" && f[3] != "gauge" && f[3] != "histogram" {
					fail("bad type")
				}
				family, typ = f[2], f[3]
			}
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			fail("no value")
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			fail("value is not a float")
		}
		series := line[:sp]
		name := series
		if j := strings.IndexByte(series, '{'); j >= 0 {
			name = series[:j]
			labels := series[j:]
			if !strings.HasSuffix(labels, "}") {
				fail("labels not closed")
			}
			for k := 1; k < len(labels)-1; k++ {
				if labels[k] == '\\' {
					if k+1 >= len(labels) || !strings.ContainsRune(`\"n`, rune(labels[k+1])) {
						fail("invalid escape")
					}
					k++
				}
			}
		}
		if !validName(name) {
			fail("bad name")
		}
		base := name
		if typ == "histogram" {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suf)
				if base != name {
					break
				}
			}
		}
		if base != family {
			fail("sample outside its family (last TYPE was " + family + ")")
		}
		out[series] = v
	}
	return out
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (i > 0 && '0' <= c && c <= '9')) {
			return false
		}
	}
	return true
}

func startMetrics(t *testing.T, reg *stats.Registry) string {
	t.Helper()
	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: reg}
	m := listeners.NewManager(rt, time.Second)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	err := m.Apply(context.Background(), config.NewSnapshot(&config.Config{AppID: "orders",
		Listeners: []config.Listener{{Name: "metrics", Kind: config.ListenerMetrics, Addresses: []string{"127.0.0.1:0"}}}}, "test"))
	if err != nil {
		t.Fatal(err)
	}
	a := m.Addrs("metrics")
	if len(a) != 1 {
		t.Fatalf("addresses %v", a)
	}
	return a[0]
}

func scrape(t *testing.T, addr, path string) (int, string, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode(), string(resp.Header.ContentType()), string(resp.Body())
}

func TestMetricsListener(t *testing.T) {
	reg := stats.NewRegistry("dapr_")
	reqs := reg.Counter("http_server_request_count", "Count of HTTP requests processed by the server.", "app_id", "method", "status")
	ok := reqs.With("orders", "GET", "200")
	ok.Add(3)
	reqs.With("orders", "POST", "500").Inc()
	lat := reg.Histogram("http_server_latency", "HTTP request end-to-end latency in server.", stats.LatencyBucketsMS, "app_id").With("orders")
	lat.Observe(12)
	reg.Gauge("runtime_inflight", "In flight.").With().Set(2)
	reg.Counter("odd_labels_total", "Label values from requests.", "topic").With("a\"b\\c\nd\te").Inc()

	addr := startMetrics(t, reg)
	for _, path := range []string{"/metrics", "/", "/anything/else"} {
		t.Run(path, func(t *testing.T) {
			code, ctype, body := scrape(t, addr, path)
			if code != 200 || ctype != "text/plain; version=0.0.4; charset=utf-8" {
				t.Fatalf("status %d content type %q", code, ctype)
			}
			samples := checkExposition(t, body)
			for series, want := range map[string]float64{
				`dapr_http_server_request_count{app_id="orders",method="GET",status="200"}`:  3,
				`dapr_http_server_request_count{app_id="orders",method="POST",status="500"}`: 1,
				`dapr_http_server_latency_bucket{app_id="orders",le="10"}`:                   0,
				`dapr_http_server_latency_bucket{app_id="orders",le="13"}`:                   1,
				`dapr_http_server_latency_bucket{app_id="orders",le="+Inf"}`:                 1,
				`dapr_http_server_latency_sum{app_id="orders"}`:                              12,
				`dapr_http_server_latency_count{app_id="orders"}`:                            1,
				`dapr_runtime_inflight`:                                  2,
				`dapr_odd_labels_total{topic="a\"b\\c\nd` + "\t" + `e"}`: 1,
			} {
				if got, ok := samples[series]; !ok || got != want {
					t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
				}
			}
		})
	}

	// Scrapes are live: a later scrape sees later counts.
	ok.Inc()
	_, _, body := scrape(t, addr, "/metrics")
	if got := checkExposition(t, body)[`dapr_http_server_request_count{app_id="orders",method="GET",status="200"}`]; got != 4 {
		t.Fatalf("second scrape: %v, want 4", got)
	}
}

func TestServeBindErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	h := func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hi") }
	if _, err := Serve(zap.NewNop(), config.Listener{Name: "m", Addresses: []string{busy.Addr().String()}}, h); err == nil ||
		!strings.Contains(err.Error(), "could not bind any address") {
		t.Fatalf("err %v", err)
	}
	s, err := Serve(zap.NewNop(), config.Listener{Name: "m", Addresses: []string{busy.Addr().String(), "127.0.0.1:0"}}, h)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if len(s.Addrs()) != 1 {
		t.Fatalf("addresses %v", s.Addrs())
	}
	code, _, body := scrape(t, s.Addrs()[0].String(), "/")
	if code != 200 || body != "hi" {
		t.Fatalf("%d %q", code, body)
	}
}

func refuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestCloseRightAfterServe: a server closed before its serving goroutines
// ran must still release its sockets.
func TestCloseRightAfterServe(t *testing.T) {
	for i := range 20 {
		s, err := Serve(zap.NewNop(), config.Listener{Name: "m", Addresses: []string{"127.0.0.1:0", "127.0.0.1:0"}},
			func(ctx *fasthttp.RequestCtx) {})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, a := range s.Addrs() {
			eventually(t, fmt.Sprintf("round %d: %s to refuse connections after Close", i, a), func() bool { return refuses(a.String()) })
		}
	}
}

// TestCloseWaitsForInFlight: Close stops accepting at once but lets a
// request being served finish.
func TestCloseWaitsForInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s, err := Serve(zap.NewNop(), config.Listener{Name: "m", Addresses: []string{"127.0.0.1:0"}}, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			close(entered)
			<-release
		}
		ctx.SetBodyString("done")
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0].String()
	scrape(t, addr, "/") // the server is up
	type result struct {
		code int
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + addr + "/slow")
		err := fasthttp.DoTimeout(req, resp, 10*time.Second)
		got <- result{resp.StatusCode(), string(resp.Body()), err}
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	eventually(t, "the server to stop accepting", func() bool { return refuses(addr) })
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a request was in flight", err)
	default:
	}
	close(release)
	r := <-got
	if r.err != nil || r.code != 200 || r.body != "done" {
		t.Fatalf("in-flight request: %v %d %q", r.err, r.code, r.body)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the request finished")
	}
}

// TestCloseGivesUpAtTheDeadline: a request that does not finish does not
// hold Close past its context.
func TestCloseGivesUpAtTheDeadline(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	s, err := Serve(zap.NewNop(), config.Listener{Name: "m", Addresses: []string{"127.0.0.1:0"}}, func(ctx *fasthttp.RequestCtx) {
		close(entered)
		<-release
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + s.Addrs()[0].String() + "/")
		_ = fasthttp.DoTimeout(req, resp, 10*time.Second)
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err == nil {
		t.Fatal("Close reported success with a request still running")
	}
}
