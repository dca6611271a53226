package httpcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// seen is a copy of what the app received.
type seen struct {
	method, uri, host, body string
	hdr                     map[string][]string // lower-cased names
	connClose               bool
}

func (s seen) get(name string) string {
	if v := s.hdr[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// app is a fasthttp server on 127.0.0.1 standing in for the local app.
type app struct {
	addr    string
	hits    atomic.Int32
	opened  atomic.Int32
	closed  atomic.Int32
	mu      sync.Mutex
	last    seen
	handler func(ctx *fasthttp.RequestCtx, n int32)
}

func (a *app) lastSeen() seen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// startApp serves h (nil: 200 with the body echoed) until the test ends.
func startApp(t testing.TB, h func(ctx *fasthttp.RequestCtx, n int32)) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{addr: ln.Addr().String(), handler: h}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			n := a.hits.Add(1)
			s := seen{
				method:    string(ctx.Method()),
				uri:       string(ctx.Request.Header.RequestURI()),
				host:      string(ctx.Request.Header.Host()),
				body:      string(ctx.Request.Body()),
				hdr:       map[string][]string{},
				connClose: ctx.Request.Header.ConnectionClose(),
			}
			for k, v := range ctx.Request.Header.All() {
				key := strings.ToLower(string(k))
				s.hdr[key] = append(s.hdr[key], string(v))
			}
			a.mu.Lock()
			a.last = s
			a.mu.Unlock()
			if a.handler != nil {
				a.handler(ctx, n)
				return
			}
			ctx.SetStatusCode(fasthttp.StatusOK)
			ctx.SetBody(ctx.Request.Body())
		},
		ConnState: func(_ net.Conn, st fasthttp.ConnState) {
			switch st {
			case fasthttp.StateNew:
				a.opened.Add(1)
			case fasthttp.StateClosed:
				a.closed.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return a
}

// gate blocks app handlers until the test opens it; tests defer open so
// that it runs before the app shuts down.
type gate struct {
	entered chan int32
	release chan struct{}
	once    sync.Once
}

func newGate() *gate {
	g := &gate{entered: make(chan int32, 16), release: make(chan struct{})}
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) wait(n int32) {
	g.entered <- n
	<-g.release
}

// waitEntered waits for a handler to block in the gate.
func (g *gate) waitEntered(t *testing.T) int32 {
	t.Helper()
	select {
	case n := <-g.entered:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("the app never received the request")
		return 0
	}
}

// deadAddr is an address that refuses connections.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// newExchange is an invocation of orders/<method> as the HTTP listener
// hands it over: the listener's URI, a Host header, the client's address.
func newExchange(verb, uri, method string) *filters.Exchange {
	ex := filters.AcquireExchange(true)
	ex.Req.Header.SetMethod(verb)
	ex.Req.SetRequestURI(uri)
	ex.Req.Header.SetHost("sidecar.local:3500")
	ex.SetInvoke([]byte("orders"), []byte(method))
	ex.SetRemoteAddr(netip.MustParseAddr("10.1.2.3"))
	return ex
}

func newCluster(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.AppID == "" {
		o.AppID = "orders"
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// do sends one request to method "m" and releases the exchange; it returns
// the error and, on success, the response status and body.
func do(c *Cluster, ctx context.Context, ex *filters.Exchange) (int, string, error) {
	defer filters.ReleaseExchange(ex)
	if err := c.Handle(ctx, ex); err != nil {
		return 0, "", err
	}
	return ex.Resp.StatusCode(), string(ex.Resp.Body()), nil
}

func post(c *Cluster, body string) (int, string, error) {
	ex := newExchange("POST", "/v1.0/invoke/orders/method/m", "m")
	ex.Req.SetBodyString(body)
	return do(c, context.Background(), ex)
}

// daprError asserts that err is the Dapr error a failed invocation answers.
func daprError(t *testing.T, err error, want codes.Code) *filters.Error {
	t.Helper()
	var e *filters.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *filters.Error", err, err)
	}
	if e.Code != filters.ErrCodeDirectInvoke || e.HTTPStatus != 500 || e.GRPCCode != want {
		t.Fatalf("error %s/%d/%v %q, want %s/500/%v", e.Code, e.HTTPStatus, e.GRPCCode, e.Message, filters.ErrCodeDirectInvoke, want)
	}
	if !strings.HasPrefix(e.Message, "failed to invoke, id: orders, err: ") {
		t.Fatalf("message %q is not daprd's", e.Message)
	}
	return e
}

func TestNew(t *testing.T) {
	cases := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"one endpoint", Options{Name: "a", Endpoints: []string{"127.0.0.1:1"}}, ""},
		{"every lb policy", Options{Name: "a", Endpoints: []string{"127.0.0.1:1"}, LBPolicy: "least_request"}, ""},
		{"random", Options{Name: "a", Endpoints: []string{"127.0.0.1:1"}, LBPolicy: "random"}, ""},
		{"pipelined", Options{Name: "a", Endpoints: []string{"127.0.0.1:1"}, PipelineConns: 2}, ""},
		{"no endpoints", Options{Name: "a"}, "httpcluster: a: no endpoints"},
		{"endpoint without port", Options{Name: "a", Endpoints: []string{"127.0.0.1:1", "localhost"}}, `httpcluster: a: endpoint "localhost"`},
		{"unknown lb policy", Options{Name: "a", Endpoints: []string{"127.0.0.1:1"}, LBPolicy: "ring_hash"}, `httpcluster: a: unknown lb_policy "ring_hash"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.opts)
			if tc.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("New: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestRequestRewrite: the app gets "/<method>" with the caller's query, its
// own address as Host, the body, the caller's headers, and daprd's
// forwarding and app id headers.
func TestRequestRewrite(t *testing.T) {
	a := startApp(t, nil)
	for _, pipelined := range []int{0, 1} {
		c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}, PipelineConns: pipelined})
		cases := []struct {
			name, verb, uri, method, wantURI string
		}{
			{"method with segments and query", "POST", "/v1.0/invoke/orders/method/orders/42?x=1&y=two", "orders/42", "/orders/42?x=1&y=two"},
			{"leading slash is not doubled", "GET", "/v1.0/invoke/orders/method//list", "/list", "/list"},
			{"empty method", "GET", "/v1.0/invoke/orders/method/", "", "/"},
			{"path is not normalized", "PUT", "/v1.0/invoke/orders/method/a/../b", "a/../b", "/a/../b"},
			{"query kept verbatim", "DELETE", "/v1.0/invoke/orders/method/s?q=a%20b&q=c", "s", "/s?q=a%20b&q=c"},
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("pipeline=%d/%s", pipelined, tc.name), func(t *testing.T) {
				ex := newExchange(tc.verb, tc.uri, tc.method)
				ex.Req.Header.Set("X-Custom", "v")
				ex.Req.Header.SetContentType("application/json")
				ex.Req.SetBodyString(`{"n":1}`)
				ex.CallerAppID = []byte("frontend")
				status, body, err := do(c, context.Background(), ex)
				if err != nil {
					t.Fatal(err)
				}
				if status != 200 || body != `{"n":1}` {
					t.Fatalf("response %d %q", status, body)
				}
				s := a.lastSeen()
				checks := []struct{ what, got, want string }{
					{"verb", s.method, tc.verb},
					{"uri", s.uri, tc.wantURI},
					{"host", s.host, a.addr},
					{"body", s.body, `{"n":1}`},
					{"content-type", s.get("Content-Type"), "application/json"},
					{"x-custom", s.get("X-Custom"), "v"},
					{"x-forwarded-for", s.get("X-Forwarded-For"), "10.1.2.3"},
					{"x-forwarded-host", s.get("X-Forwarded-Host"), "sidecar.local:3500"},
					{"forwarded", s.get("Forwarded"), `for=10.1.2.3;host="sidecar.local:3500"`},
					{"caller", s.get("dapr-caller-app-id"), "frontend"},
					{"callee", s.get("dapr-callee-app-id"), "orders"},
				}
				for _, ck := range checks {
					if ck.got != ck.want {
						t.Errorf("%s = %q, want %q", ck.what, ck.got, ck.want)
					}
				}
			})
		}
	}
}

// TestForwardingHeadersAppend: what earlier proxies set is kept; this hop is
// appended to X-Forwarded-For and Forwarded (as daprd does), an IPv6 client
// is quoted in Forwarded (RFC 7239), X-Forwarded-Host keeps the first value.
func TestForwardingHeadersAppend(t *testing.T) {
	a := startApp(t, nil)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}})
	cases := []struct {
		name, remote, host        string
		xff, fwd, xfh             string // set by the caller; "" none
		wantXFF, wantFwd, wantXFH string
	}{
		{"first hop, token host", "10.1.2.3", "sidecar", "", "", "", "10.1.2.3", "for=10.1.2.3;host=sidecar", "sidecar"},
		{"ipv6 client", "2001:db8::7", "sidecar", "", "", "", "2001:db8::7", `for="[2001:db8::7]";host=sidecar`, "sidecar"},
		{"after other proxies", "10.1.2.3", "sidecar", "203.0.113.9", "for=203.0.113.9", "shop.example", "203.0.113.9, 10.1.2.3", "for=203.0.113.9, for=10.1.2.3;host=sidecar", "shop.example"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex := newExchange("GET", "/v1.0/invoke/orders/method/m", "m")
			ex.Req.Header.SetHost(tc.host)
			ex.SetRemoteAddr(netip.MustParseAddr(tc.remote))
			for k, v := range map[string]string{"X-Forwarded-For": tc.xff, "Forwarded": tc.fwd, "X-Forwarded-Host": tc.xfh} {
				if v != "" {
					ex.Req.Header.Set(k, v)
				}
			}
			if _, _, err := do(c, context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			s := a.lastSeen()
			for _, ck := range []struct{ h, want string }{{"X-Forwarded-For", tc.wantXFF}, {"Forwarded", tc.wantFwd}, {"X-Forwarded-Host", tc.wantXFH}} {
				if got := s.get(ck.h); got != ck.want {
					t.Errorf("%s = %q, want %q", ck.h, got, ck.want)
				}
			}
		})
	}
}

// TestNoForwardingHeadersWithoutOrigin: with no client address and no Host
// there is nothing to forward, and no empty header is invented.
func TestNoForwardingHeadersWithoutOrigin(t *testing.T) {
	a := startApp(t, nil)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}})
	ex := filters.AcquireExchange(true)
	ex.Req.Header.SetMethod("GET")
	ex.Req.SetRequestURI("/v1.0/invoke/orders/method/m")
	ex.SetInvoke([]byte("orders"), []byte("m"))
	if _, _, err := do(c, context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	s := a.lastSeen()
	for _, h := range []string{"x-forwarded-for", "x-forwarded-host", "forwarded"} {
		if v, ok := s.hdr[h]; ok {
			t.Errorf("%s sent as %q", h, v)
		}
	}
	if s.host != a.addr {
		t.Errorf("host %q, want %q", s.host, a.addr)
	}
}

// TestHopByHopHeadersStripped: hop-by-hop headers, and the headers the
// Connection header names, do not reach the app; the rest do.
func TestHopByHopHeadersStripped(t *testing.T) {
	a := startApp(t, nil)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}})
	cases := []struct {
		name     string
		hdr      [][2]string
		stripped []string
		kept     map[string]string
	}{
		{
			name: "fixed hop-by-hop set",
			hdr: [][2]string{
				{"Keep-Alive", "timeout=5"}, {"Proxy-Connection", "keep-alive"}, {"Proxy-Authorization", "Basic eA=="},
				{"Proxy-Authenticate", "Basic"}, {"Te", "trailers"}, {"Trailer", "X-Checksum"}, {"Upgrade", "websocket"},
				{"X-Keep", "1"},
			},
			stripped: []string{"keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "upgrade", "connection"},
			kept:     map[string]string{"x-keep": "1"},
		},
		{
			name:     "headers named by Connection",
			hdr:      [][2]string{{"Connection", "X-Secret, x-other ,Upgrade"}, {"X-Secret", "s"}, {"X-Other", "o"}, {"Upgrade", "h2c"}, {"X-Keep", "1"}},
			stripped: []string{"connection", "x-secret", "x-other", "upgrade"},
			kept:     map[string]string{"x-keep": "1"},
		},
		{
			name:     "keep-alive plus a named header",
			hdr:      [][2]string{{"Connection", "keep-alive, X-Secret"}, {"X-Secret", "s"}, {"X-Keep", "1"}},
			stripped: []string{"connection", "x-secret"},
			kept:     map[string]string{"x-keep": "1"},
		},
		{
			name:     "Connection: keep-alive names nothing else",
			hdr:      [][2]string{{"Connection", "keep-alive"}, {"X-Keep", "1"}},
			stripped: []string{"connection"},
			kept:     map[string]string{"x-keep": "1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex := newExchange("POST", "/v1.0/invoke/orders/method/m", "m")
			for _, h := range tc.hdr {
				ex.Req.Header.Add(h[0], h[1])
			}
			if _, _, err := do(c, context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			s := a.lastSeen()
			for _, h := range tc.stripped {
				if v, ok := s.hdr[h]; ok {
					t.Errorf("hop-by-hop %s reached the app: %q", h, v)
				}
			}
			for h, want := range tc.kept {
				if got := s.get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

// TestClientConnectionCloseNotForwarded: the client's "Connection: close"
// is about its own connection; the pooled app connection stays open and is
// reused.
func TestClientConnectionCloseNotForwarded(t *testing.T) {
	a := startApp(t, nil)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}})
	for i := range 3 {
		ex := newExchange("POST", "/v1.0/invoke/orders/method/m", "m")
		ex.Req.Header.SetConnectionClose()
		if _, _, err := do(c, context.Background(), ex); err != nil {
			t.Fatal(err)
		}
		if s := a.lastSeen(); s.connClose {
			t.Fatalf("request %d: the app was asked to close the connection", i)
		}
	}
	if n := a.opened.Load(); n != 1 {
		t.Fatalf("the app saw %d connections for 3 sequential requests, want 1", n)
	}
}

// TestIdentityHeaders: dapr-caller-app-id is the calling app (or our own
// id), never what the client claims; dapr-callee-app-id is our id; the
// app token replaces the client's Dapr API token, which never reaches the
// app.
func TestIdentityHeaders(t *testing.T) {
	a := startApp(t, nil)
	cases := []struct {
		name                  string
		appToken, callerAppID string
		wantCaller, wantToken string
	}{
		{"self invocation, no app token", "", "", "orders", ""},
		{"remote caller, app token", "app-secret", "frontend", "frontend", "app-secret"},
		{"self invocation, app token", "app-secret", "", "orders", "app-secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}, AppAPIToken: tc.appToken})
			ex := newExchange("POST", "/v1.0/invoke/orders/method/m", "m")
			ex.Req.Header.Set("dapr-api-token", "the-dapr-api-token")
			ex.Req.Header.Set("dapr-caller-app-id", "spoofed")
			ex.Req.Header.Add("dapr-caller-app-id", "spoofed again")
			ex.Req.Header.Set("dapr-callee-app-id", "spoofed")
			ex.Req.Header.Add("dapr-callee-app-id", "spoofed again")
			ex.Req.Header.Add("dapr-api-token", "another token")
			ex.CallerAppID = []byte(tc.callerAppID)
			if _, _, err := do(c, context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			s := a.lastSeen()
			if got := s.hdr["dapr-caller-app-id"]; len(got) != 1 || got[0] != tc.wantCaller {
				t.Errorf("dapr-caller-app-id %q, want [%q]", got, tc.wantCaller)
			}
			if got := s.hdr["dapr-callee-app-id"]; len(got) != 1 || got[0] != "orders" {
				t.Errorf("dapr-callee-app-id %q, want [orders]", got)
			}
			got, ok := s.hdr["dapr-api-token"]
			switch {
			case tc.wantToken == "" && ok:
				t.Errorf("the client's dapr-api-token reached the app: %q", got)
			case tc.wantToken != "" && (len(got) != 1 || got[0] != tc.wantToken):
				t.Errorf("dapr-api-token %q, want [%q]", got, tc.wantToken)
			}
		})
	}
}

// TestResponse: the app's status, headers and body are the response; its
// connection management headers are not.
func TestResponse(t *testing.T) {
	a := startApp(t, func(ctx *fasthttp.RequestCtx, _ int32) {
		ctx.SetStatusCode(fasthttp.StatusCreated)
		ctx.Response.Header.Set("X-App", "yes")
		ctx.Response.Header.Set("Keep-Alive", "timeout=5")
		ctx.Response.Header.SetContentType("text/plain")
		ctx.SetConnectionClose()
		ctx.SetBodyString("created")
	})
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}})
	ex := newExchange("POST", "/v1.0/invoke/orders/method/m", "m")
	defer filters.ReleaseExchange(ex)
	if err := c.Handle(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	r := &ex.Resp.Header
	if ex.Resp.StatusCode() != 201 || string(ex.Resp.Body()) != "created" || string(r.Peek("X-App")) != "yes" || string(r.ContentType()) != "text/plain" {
		t.Fatalf("response %d %q x-app=%q ct=%q", ex.Resp.StatusCode(), ex.Resp.Body(), r.Peek("X-App"), r.ContentType())
	}
	if r.ConnectionClose() {
		t.Error("the app's Connection: close would close the client's connection")
	}
	if v := r.Peek("Keep-Alive"); v != nil {
		t.Errorf("the app's Keep-Alive header is in the response: %q", v)
	}
}

// rawApp answers every request on a raw socket with resp, for responses a
// fasthttp server would not write (header name case).
func rawApp(t *testing.T, resp string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					var req fasthttp.Request
					if err := req.Read(br); err != nil {
						return
					}
					if _, err := conn.Write([]byte(resp)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestResponseHopHeadersAnyCase: header names from the app keep their case
// (normalizing is off), so its Connection and Keep-Alive headers must be
// dropped whatever their case; many servers (h11, hyper) write lower-case
// names, Node.js sends "Connection: keep-alive" on every response.
func TestResponseHopHeadersAnyCase(t *testing.T) {
	cases := []struct{ name, lines string }{
		{"canonical", "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"},
		{"lower case", "connection: keep-alive\r\nkeep-alive: timeout=5\r\n"},
		{"upper case", "CONNECTION: keep-alive\r\nKEEP-ALIVE: timeout=5\r\n"},
		{"repeated", "keep-alive: timeout=5\r\nKeep-Alive: max=100\r\nConnection: keep-alive\r\n"},
		{"close, lower case", "connection: close\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawApp(t, "HTTP/1.1 200 OK\r\n"+tc.lines+"x-app: yes\r\ncontent-length: 2\r\n\r\nok")
			c := newCluster(t, Options{Name: "app", Endpoints: []string{addr}})
			ex := newExchange("GET", "/v1.0/invoke/orders/method/m", "m")
			defer filters.ReleaseExchange(ex)
			if err := c.Handle(context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			if string(ex.Resp.Body()) != "ok" || string(ex.Resp.Header.Peek("x-app")) != "yes" {
				t.Fatalf("response %q, x-app %q", ex.Resp.Body(), ex.Resp.Header.Peek("x-app"))
			}
			if ex.Resp.Header.ConnectionClose() {
				t.Error("the app's Connection: close would close the client's connection")
			}
			for k, v := range ex.Resp.Header.All() {
				if strings.EqualFold(string(k), "keep-alive") || strings.EqualFold(string(k), "connection") {
					t.Errorf("hop-by-hop %s: %s is in the response", k, v)
				}
			}
		})
	}
}

// TestAppDown: a refused connection is a Dapr ERR_DIRECT_INVOKE, 500,
// Unavailable, pipelined or not, and with no timeout set it fails at once
// rather than waiting for the app to come back.
func TestAppDown(t *testing.T) {
	for _, pipelined := range []int{0, 1} {
		t.Run(fmt.Sprintf("pipeline=%d", pipelined), func(t *testing.T) {
			c := newCluster(t, Options{Name: "app", Endpoints: []string{deadAddr(t)}, PipelineConns: pipelined})
			for range 3 {
				_, err := postWithin(t, c, "x")
				daprError(t, err, codes.Unavailable)
			}
		})
	}
}

// postWithin is post, failing the test when no answer comes within 10 s.
func postWithin(t *testing.T, c *Cluster, body string) (string, error) {
	t.Helper()
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, b, err := post(c, body)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.body, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("the request neither failed nor was answered")
		return "", nil
	}
}

// TestPipelinedAppRestart: a pipelined endpoint whose app went away fails
// requests as Unavailable, and serves again once the app is back on the
// same address.
func TestPipelinedAppRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) *fasthttp.Server {
		srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(ctx.Request.Body()) }, CloseOnShutdown: true}
		go func() { _ = srv.Serve(ln) }()
		return srv
	}
	srv := serve(ln)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{addr}, PipelineConns: 1, Eject: time.Millisecond})
	if _, body, err := post(c, "a"); err != nil || body != "a" {
		t.Fatalf("before the restart: %q %v", body, err)
	}
	if err := srv.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// The app is down: requests fail (their connection broke, or the
	// redial is refused) rather than hang.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := postWithin(t, c, "b")
		if err != nil {
			var e *filters.Error
			if !errors.As(err, &e) || e.Code != filters.ErrCodeDirectInvoke {
				t.Fatalf("error %v", err)
			}
			if e.GRPCCode == codes.Unavailable && isRefused(e.Err) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests to a stopped app never failed as refused (last: %v)", err)
		}
		time.Sleep(time.Millisecond)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the app's port was taken meanwhile: %v", err)
	}
	srv2 := serve(ln2)
	t.Cleanup(func() { _ = srv2.Shutdown() })
	for {
		body, err := postWithin(t, c, "c")
		if err == nil && body == "c" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted app was not used again (last: %q %v)", body, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTimeout: the route's timeout (ex.Timeout) wins over the cluster's; a
// request the app does not answer in time is DeadlineExceeded.
func TestTimeout(t *testing.T) {
	const appDelay = 300 * time.Millisecond
	a := startApp(t, func(ctx *fasthttp.RequestCtx, _ int32) {
		time.Sleep(appDelay) // a slow app, not synchronisation
		ctx.SetBodyString("late")
	})
	cases := []struct {
		name           string
		cluster, route time.Duration
		pipelined      int
		wantDeadline   bool
	}{
		{"cluster timeout", 50 * time.Millisecond, 0, 0, true},
		{"cluster timeout, pipelined", 50 * time.Millisecond, 0, 1, true},
		{"route timeout shorter than the cluster's", time.Hour, 50 * time.Millisecond, 0, true},
		{"route timeout longer than the cluster's", 50 * time.Millisecond, 10 * time.Second, 0, false},
		{"no timeout", 0, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}, Timeout: tc.cluster, PipelineConns: tc.pipelined})
			ex := newExchange("POST", "/v1.0/invoke/orders/method/m", "m")
			ex.Timeout = tc.route
			_, body, err := do(c, context.Background(), ex)
			if !tc.wantDeadline {
				if err != nil || body != "late" {
					t.Fatalf("got %q %v, want the app's late answer", body, err)
				}
				return
			}
			daprError(t, err, codes.DeadlineExceeded)
		})
	}
}

// TestMaxConcurrency: with max_concurrency 1 a second request waits for the
// first; it never reaches the app while the first runs, it gives up when
// its context ends, and it goes through once a slot is free.
func TestMaxConcurrency(t *testing.T) {
	g := newGate()
	defer g.open()
	a := startApp(t, func(ctx *fasthttp.RequestCtx, n int32) {
		if n == 1 {
			g.wait(n)
		}
		ctx.SetBodyString(fmt.Sprint(n))
	})
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}, MaxConcurrency: 1})
	first := make(chan error, 1)
	go func() {
		_, _, err := post(c, "1")
		first <- err
	}()
	g.waitEntered(t)

	// The slot is taken: a request whose context is already over is
	// refused without reaching the app.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	second := make(chan error, 1)
	go func() {
		_, _, err := do(c, ctx, newExchange("POST", "/v1.0/invoke/orders/method/m", "m"))
		second <- err
	}()
	select {
	case err := <-second:
		daprError(t, err, codes.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("a request over max_concurrency reached the app")
	}
	if n := a.hits.Load(); n != 1 {
		t.Fatalf("the app got %d requests, want 1", n)
	}

	// The route timeout covers the wait for a slot.
	ex := newExchange("POST", "/v1.0/invoke/orders/method/m", "m")
	ex.Timeout = 30 * time.Millisecond
	if _, _, err := do(c, context.Background(), ex); err == nil {
		t.Fatal("a request over max_concurrency was answered while the slot was taken")
	} else {
		daprError(t, err, codes.DeadlineExceeded)
	}
	if n := a.hits.Load(); n != 1 {
		t.Fatalf("the app got %d requests, want 1", n)
	}

	// A waiting request goes through once the first finishes.
	third := make(chan error, 1)
	go func() {
		_, body, err := post(c, "3")
		if err == nil && body != "2" {
			err = fmt.Errorf("body %q, want the app's second request", body)
		}
		third <- err
	}()
	g.open()
	for _, ch := range []chan error{first, third} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a request never finished")
		}
	}
}

// TestMaxConnsPerEndpoint: when every connection to an endpoint is busy
// the request fails at once as Unavailable rather than queueing.
func TestMaxConnsPerEndpoint(t *testing.T) {
	g := newGate()
	defer g.open()
	a := startApp(t, func(ctx *fasthttp.RequestCtx, n int32) {
		if n == 1 {
			g.wait(n)
		}
	})
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr}, MaxConns: 1})
	first := make(chan error, 1)
	go func() {
		_, _, err := post(c, "1")
		first <- err
	}()
	g.waitEntered(t)
	_, _, err := post(c, "2")
	e := daprError(t, err, codes.Unavailable)
	if !errors.Is(e, fasthttp.ErrNoFreeConns) {
		t.Fatalf("cause %v, want ErrNoFreeConns", e.Err)
	}
	g.open()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

// TestPassiveEjection: an endpoint that refused a connection is skipped for
// the eject period, then tried again.
func TestPassiveEjection(t *testing.T) {
	live := startApp(t, nil)
	for _, lb := range []string{"round_robin", "least_request", "random"} {
		t.Run(lb, func(t *testing.T) {
			dead := deadAddr(t)
			c := newCluster(t, Options{Name: "app", Endpoints: []string{dead, live.addr}, LBPolicy: lb, Eject: time.Hour})
			before := live.hits.Load()
			failed := 0
			for i := range 40 {
				_, _, err := post(c, "x")
				if err != nil {
					daprError(t, err, codes.Unavailable)
					failed++
					if failed > 1 {
						t.Fatalf("request %d went to the ejected endpoint again", i)
					}
				}
			}
			if failed == 0 && lb != "random" {
				t.Fatal("the dead endpoint was never tried")
			}
			if got := live.hits.Load() - before; got != int32(40-failed) {
				t.Fatalf("live endpoint got %d requests, want %d", got, 40-failed)
			}
		})
	}
	t.Run("ejection expires", func(t *testing.T) {
		c := newCluster(t, Options{Name: "app", Endpoints: []string{deadAddr(t), live.addr}, Eject: time.Millisecond})
		failures := 0
		deadline := time.Now().Add(5 * time.Second)
		for failures < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("the ejected endpoint was not tried again after its eject period (%d failures)", failures)
			}
			if _, _, err := post(c, "x"); err != nil {
				failures++
			}
		}
	})
	t.Run("all ejected: still tried", func(t *testing.T) {
		c := newCluster(t, Options{Name: "app", Endpoints: []string{deadAddr(t), deadAddr(t)}, Eject: time.Hour})
		for range 4 {
			_, _, err := post(c, "x")
			daprError(t, err, codes.Unavailable)
		}
	})
}

// TestRoundRobin spreads sequential requests evenly.
func TestRoundRobin(t *testing.T) {
	a, b := startApp(t, nil), startApp(t, nil)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr, b.addr}})
	for range 10 {
		if _, _, err := post(c, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if a.hits.Load() != 5 || b.hits.Load() != 5 {
		t.Fatalf("split %d/%d, want 5/5", a.hits.Load(), b.hits.Load())
	}
}

// TestRandom uses every endpoint.
func TestRandom(t *testing.T) {
	a, b := startApp(t, nil), startApp(t, nil)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{a.addr, b.addr}, LBPolicy: "random"})
	for range 100 {
		if _, _, err := post(c, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if a.hits.Load() == 0 || b.hits.Load() == 0 || a.hits.Load()+b.hits.Load() != 100 {
		t.Fatalf("split %d/%d", a.hits.Load(), b.hits.Load())
	}
}

// TestLeastRequest avoids the endpoint with a request in flight.
func TestLeastRequest(t *testing.T) {
	g := newGate()
	defer g.open()
	busy := startApp(t, func(ctx *fasthttp.RequestCtx, n int32) {
		if n == 1 {
			g.wait(n)
		}
	})
	idle := startApp(t, nil)
	c := newCluster(t, Options{Name: "app", Endpoints: []string{busy.addr, idle.addr}, LBPolicy: "least_request"})
	first := make(chan error, 1)
	go func() {
		_, _, err := post(c, "1") // ties go to the first endpoint
		first <- err
	}()
	g.waitEntered(t)
	for range 5 {
		if _, _, err := post(c, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if busy.hits.Load() != 1 || idle.hits.Load() != 5 {
		t.Fatalf("busy got %d, idle got %d; want 1 and 5", busy.hits.Load(), idle.hits.Load())
	}
	g.open()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

// TestPipelinedConcurrent: concurrent requests pipelined over one
// connection (those past the join budget go around it) each get their own
// answer.
func TestPipelinedConcurrent(t *testing.T) {
	a := startApp(t, nil)
	reg := stats.NewRegistry("dapr_")
	c := newCluster(t, Options{Name: "app", AppID: "orders", Endpoints: []string{a.addr}, PipelineConns: 1, Stats: reg})
	// The pipelined connection is dialed first: callers that find it being
	// dialed go around rather than wait.
	if _, _, err := post(c, "first"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprint("req-", i)
			_, body, err := post(c, want)
			if err == nil && body != want {
				err = fmt.Errorf("got %q, want %q", body, want)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := a.opened.Load(); n >= 33 {
		t.Errorf("pipeline_connections 1 opened %d connections for 33 requests: none was pipelined", n)
	}
	var out bytes.Buffer
	if err := reg.WritePrometheus(&out); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^dapr_app_pipeline_requests_total\{app_id="orders",cluster="app",way="pipelined"\} [1-9]`).Match(out.Bytes()) {
		t.Errorf("no pipelined requests counted on the metrics:\n%s", out.String())
	}
}

// TestStreamUnsupported: an HTTP app cannot take a gRPC stream.
func TestStreamUnsupported(t *testing.T) {
	c := newCluster(t, Options{Name: "app", Endpoints: []string{"127.0.0.1:1"}})
	ex := newExchange("POST", "/", "m")
	defer filters.ReleaseExchange(ex)
	ex.Stream = fakeStream{}
	if err := c.Handle(context.Background(), ex); !errors.Is(err, filters.ErrStreamUnsupported) {
		t.Fatalf("err %v, want ErrStreamUnsupported", err)
	}
}

type fakeStream struct{}

func (fakeStream) FullMethod() string { return "/pkg.S/M" }
func (fakeStream) Native() any        { return nil }

// TestCloseReleasesIdleConnections: Close closes the pooled connections
// (the manager closes retired clusters), and a second Close is harmless.
func TestCloseReleasesIdleConnections(t *testing.T) {
	a := startApp(t, nil)
	c, err := New(Options{Name: "app", AppID: "orders", Endpoints: []string{a.addr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := post(c, "x"); err != nil {
		t.Fatal(err)
	}
	if a.opened.Load() != 1 || a.closed.Load() != 0 {
		t.Fatalf("opened %d closed %d before Close", a.opened.Load(), a.closed.Load())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.closed.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was not closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestRewriteAllocatesNothing: once the exchange's buffers have grown, the
// rewrite of a request for the app allocates nothing.
func TestRewriteAllocatesNothing(t *testing.T) {
	c := newCluster(t, Options{Name: "app", Endpoints: []string{"127.0.0.1:8080"}, AppAPIToken: "tok"})
	ex := newExchange("POST", "/v1.0/invoke/orders/method/orders/42?x=1", "orders/42")
	defer filters.ReleaseExchange(ex)
	ex.Req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	ex.CallerAppID = []byte("frontend")
	run := func() {
		ex.Req.Header.SetHost("sidecar.local:3500")
		ex.Req.Header.Set("Keep-Alive", "timeout=5")
		c.rewrite(ex, ex.Req, c.eps[0].host)
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Fatalf("rewrite allocates %v times per request", n)
	}
	if got := string(ex.Req.RequestURI()); got != "/orders/42?x=1" {
		t.Fatalf("uri %q", got)
	}
}

func BenchmarkRewrite(b *testing.B) {
	c, err := New(Options{Name: "app", AppID: "orders", Endpoints: []string{"127.0.0.1:8080"}})
	if err != nil {
		b.Fatal(err)
	}
	ex := newExchange("POST", "/v1.0/invoke/orders/method/orders/42?x=1", "orders/42")
	defer filters.ReleaseExchange(ex)
	b.ReportAllocs()
	for b.Loop() {
		ex.Req.Header.SetHost("sidecar.local:3500")
		ex.Req.Header.Del("X-Forwarded-For") // a fresh request: no earlier hop
		ex.Req.Header.Del("Forwarded")
		ex.Req.Header.Del("X-Forwarded-Host")
		c.rewrite(ex, ex.Req, c.eps[0].host)
	}
}

func benchmarkHandle(b *testing.B, pipelined int) {
	a := startApp(b, func(ctx *fasthttp.RequestCtx, _ int32) { ctx.SetBodyString("ok") })
	c := newCluster(b, Options{Name: "app", Endpoints: []string{a.addr}, PipelineConns: pipelined})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ex := newExchange("POST", "/v1.0/invoke/orders/method/m?x=1", "m")
			ex.Req.SetBodyString(`{"n":1}`)
			if err := c.Handle(context.Background(), ex); err != nil {
				b.Error(err)
			}
			filters.ReleaseExchange(ex)
		}
	})
}

func BenchmarkHandle(b *testing.B)          { benchmarkHandle(b, 0) }
func BenchmarkHandlePipelined(b *testing.B) { benchmarkHandle(b, 2) }

// TestResponseCleanupAllocatesNothing: dropping the app's connection
// headers from a response allocates nothing, found or not.
func TestResponseCleanupAllocatesNothing(t *testing.T) {
	var r fasthttp.Response
	r.Header.DisableNormalizing()
	fill := func() {
		r.Header.Set("content-type", "application/json")
		r.Header.Set("x-request-id", "abc")
		r.Header.Set("keep-alive", "timeout=5")
		r.Header.Set("Connection", "keep-alive")
	}
	run := func() {
		fill()
		delFold(&r.Header, hdrConnectionB)
		delFold(&r.Header, hdrKeepAliveB)
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Fatalf("response cleanup allocates %v times", n)
	}
	if r.Header.Peek("keep-alive") != nil || r.Header.Peek("Connection") != nil || string(r.Header.Peek("x-request-id")) != "abc" {
		t.Fatalf("headers after cleanup: %s", r.Header.Header())
	}
}
