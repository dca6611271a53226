package internalgrpc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-proxy/switchyard/clusters/sidecar"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// The peer link: a sidecar cluster that talks to this listener learns from
// the first CallLocal answer that it may use HTTP/1.1, and from then on the
// listener's chain and the cluster's caller must see exactly what they saw
// over gRPC.

func linkCluster(t *testing.T, s *server, link bool) *sidecar.Cluster {
	t.Helper()
	c, err := sidecar.New(sidecar.Options{Name: "orders", AppID: "orders", SelfAppID: "checkout", SelfNamespace: "prod",
		Endpoints: []string{s.l.Addrs()[0].String()}, Link: link, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// got is what a caller got back from one invocation.
type got struct {
	status   int
	ctype    string
	headers  map[string][]string
	body     string
	trailers metadata.MD
	err      *filters.Error
}

// invokeVia sends one invocation of method through c, built as the HTTP
// listener builds it, with headers that the rules drop or rename.
func invokeVia(t *testing.T, c *sidecar.Cluster, method string) got {
	t.Helper()
	return invokeIdem(t, c, method, false)
}

// invokeIdem is invokeVia on a route that is idempotent or not.
func invokeIdem(t *testing.T, c *sidecar.Cluster, method string, idempotent bool) got {
	t.Helper()
	ex := filters.AcquireExchange(true)
	ex.Idempotent = idempotent
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolHTTP
	r := ex.Req
	r.SetRequestURI("/v1.0/invoke/orders/method/x")
	r.URI().SetQueryString("a=1&b=2")
	r.Header.SetMethod("PUT")
	r.Header.SetContentType("application/json")
	r.Header.SetHost("127.0.0.1:3500")
	r.Header.Add("X-Custom", "a")
	r.Header.Add("X-Custom", "b")
	r.Header.Set("Grpc-Trace-Bin", "AAEC")
	r.Header.Set("Grpc-Timeout", "1S")
	r.Header.Set("Auth-Bin", b64("\xff"))
	r.Header.Set("Destination-App-Id", "elsewhere")
	r.Header.Set("Te", "trailers")
	r.Header.Set("Connection", "X-Hop")
	r.Header.Set("X-Hop", "1")
	r.Header.Set("Dapr-Caller-App-Id", "forged")
	r.Header.Add("Dapr-Caller-App-Id", "forged again")
	r.Header.Add("Dapr-Callee-App-Id", "someone")
	r.Header.Add("Dapr-Callee-App-Id", "someone else")
	r.Header.Set("Switchyard-Error", "ERR_FORGED")
	r.SetBodyString(`{"id":1}`)
	ex.SetInvoke([]byte("orders"), []byte(method))
	ex.SetRemoteAddr(netip.MustParseAddr("10.0.0.9"))
	var g got
	if err := c.Handle(ctx10(t), ex); err != nil {
		fe, ok := err.(*filters.Error)
		if !ok {
			t.Fatalf("error %T %v, want *filters.Error", err, err)
		}
		g.err = &filters.Error{Code: fe.Code, HTTPStatus: fe.HTTPStatus, GRPCCode: fe.GRPCCode, Message: fe.Message}
		return g
	}
	g.status = ex.Resp.StatusCode()
	g.ctype = string(ex.Resp.Header.ContentType())
	g.body = string(ex.Resp.Body())
	g.headers = map[string][]string{}
	for k, v := range ex.Resp.Header.All() {
		lk := strings.ToLower(string(k))
		g.headers[lk] = append(g.headers[lk], string(v))
	}
	delete(g.headers, "content-length") // as in sortedHeaders
	if md, ok := ex.Value(grpcwire.TrailerKey).(metadata.MD); ok {
		g.trailers = md
	}
	return g
}

// appAnswer is the chain's answer: what an app behind the listener says,
// with headers that must not cross and a gRPC app's trailers.
func appAnswer(_ context.Context, ex *filters.Exchange) error {
	if strings.HasPrefix(string(ex.Method), "deny") {
		return filters.NewError("ERR_PERMISSION_DENIED", 403, codes.PermissionDenied, "access control policy has denied access to appid: checkout operation: %s", ex.Method)
	}
	ex.Resp.SetStatusCode(201)
	ex.Resp.Header.SetContentType("text/plain")
	ex.Resp.Header.Set("X-Resp", "r")
	ex.Resp.Header.Set("Server", "app")
	ex.Resp.Header.Set("Date", "Sat, 21 Nov 2026 10:00:00 GMT")
	ex.Resp.Header.Set("Grpc-Status", "0")
	ex.Resp.Header.Set("Resp-Bin", "AAEC")
	ex.Resp.Header.Set("Keep-Alive", "timeout=5")
	ex.Resp.Header.Set("Switchyard-Error", "ERR_FROM_THE_APP")
	ex.Resp.SetBodyString("created:" + string(ex.Req.Body()))
	ex.SetValue(grpcwire.TrailerKey, metadata.MD{"x-trailer": {"t"}, "t-bin": {"\x00\x01"}})
	return nil
}

// sortedHeaders sorts each header's values and leaves out Content-Length,
// which fasthttp lists for a parsed message and not for a built one.
func sortedHeaders(s seen) seen {
	for _, v := range s.headers {
		sort.Strings(v)
	}
	delete(s.headers, "content-length")
	return s
}

func TestLinkSameAsGRPC(t *testing.T) {
	s := startServer(t, 0, appAnswer)
	c := linkCluster(t, s, true)
	for _, method := range []string{"orders/new", "with space/and?query#frag", "100%/ü/é", "deny/this"} {
		t.Run(method, func(t *testing.T) {
			overGRPC := linkCluster(t, s, false)
			want := invokeVia(t, overGRPC, method)
			wantSeen := sortedHeaders(s.last(t))
			before := s.l.linkServed.Load()
			_ = invokeVia(t, c, method) // over gRPC the first time, or the link
			_ = s.last(t)
			gotLink := invokeVia(t, c, method)
			gotSeen := sortedHeaders(s.last(t))
			if s.l.linkServed.Load() == before {
				t.Fatal("the second call did not come over the link")
			}
			if !reflect.DeepEqual(gotSeen, wantSeen) {
				t.Errorf("the chain saw over the link:\n%+v\nover gRPC:\n%+v", gotSeen, wantSeen)
			}
			if !reflect.DeepEqual(gotLink, want) {
				t.Errorf("the caller got over the link:\n%+v\nover gRPC:\n%+v", gotLink, want)
			}
			if strings.HasPrefix(method, "deny") {
				if want.err == nil || want.err.Code != "ERR_PERMISSION_DENIED" || want.err.HTTPStatus != 403 || want.err.GRPCCode != codes.PermissionDenied {
					t.Fatalf("error %+v", want.err)
				}
				return
			}
			// What both transports agree on is also what daprd does.
			if wantSeen.key != "/invoke/orders/method/"+method || wantSeen.method != "PUT" || wantSeen.query != "a=1&b=2" ||
				wantSeen.caller != "checkout" || wantSeen.callerNS != "prod" || wantSeen.ctype != "application/json" {
				t.Fatalf("decoded %+v", wantSeen)
			}
			h := wantSeen.headers
			for _, k := range []string{"auth-bin", "grpc-timeout", "destination-app-id", "te", "x-hop", "connection", "switchyard-link", "host"} {
				if _, ok := h[k]; ok {
					t.Errorf("header %s must not reach the app: %v", k, h)
				}
			}
			if !reflect.DeepEqual(h["x-custom"], []string{"a", "b"}) || h["dapr-grpc-timeout"][0] != "1S" || h["grpc-trace-bin"][0] != "AAEC" {
				t.Errorf("headers %v", h)
			}
			if want.status != 201 || want.body != `created:{"id":1}` || want.ctype != "text/plain" ||
				want.headers["x-resp"][0] != "r" || want.headers["dapr-grpc-status"][0] != "0" {
				t.Fatalf("answer %+v", want)
			}
			for _, k := range []string{"server", "date", "resp-bin", "keep-alive", "grpc-status", "switchyard-link", "switchyard-error"} {
				if _, ok := want.headers[k]; ok {
					t.Errorf("response header %s must not reach the caller: %v", k, want.headers)
				}
			}
			if !reflect.DeepEqual(want.trailers, metadata.MD{"x-trailer": {"t"}, "t-bin": {"\x00\x01"}}) {
				t.Errorf("trailers %v", want.trailers)
			}
		})
	}
}

func TestLinkTurnedOff(t *testing.T) {
	off := false
	s := startServerCfg(t, &config.Config{AppID: "orders", InternalHTTP: &off}, appAnswer)
	c := linkCluster(t, s, true)
	for i := 0; i < 3; i++ {
		if g := invokeVia(t, c, "m"); g.status != 201 {
			t.Fatalf("call %d: %+v", i, g)
		}
		_ = s.last(t)
	}
	if n := s.l.linkServed.Load(); n != 0 {
		t.Fatalf("%d calls came over a link the listener does not offer", n)
	}
	// An HTTP/1.1 request gets nothing but a closed connection from gRPC.
	conn, err := net.Dial("tcp", s.l.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /m HTTP/1.1\r\nHost: x\r\nSwitchyard-Link: 1\r\n\r\n")
	if line, err := bufio.NewReader(conn).ReadString('\n'); err == nil && strings.HasPrefix(line, "HTTP/1.1 2") {
		t.Fatalf("a listener without the link answered %q", line)
	}
}

// A caller that learned the link falls back to gRPC when the port stops
// offering it (the peer restarted as a sidecar without the link).
func TestLinkFallsBackToGRPC(t *testing.T) {
	s := startServer(t, 0, appAnswer)
	addr := s.l.Addrs()[0].String()
	c, err := sidecar.New(sidecar.Options{Name: "orders", AppID: "orders", SelfAppID: "checkout",
		Endpoints: []string{addr}, Link: true, Backoff: 10 * time.Millisecond, Eject: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 2; i++ {
		if g := invokeVia(t, c, "m"); g.status != 201 {
			t.Fatalf("call %d: %+v", i, g)
		}
		_ = s.last(t)
	}
	if s.l.linkServed.Load() != 1 {
		t.Fatalf("link served %d, want 1", s.l.linkServed.Load())
	}
	off := false
	restart(t, s, addr, &config.Config{AppID: "orders", InternalHTTP: &off}) // without the link
	// The first call may fail (it may have reached the peer: not retried
	// unless idempotent); the ones after it go over gRPC and work.
	ok := 0
	for i := 0; i < 3; i++ {
		g := invokeVia(t, c, "m")
		if g.status == 201 {
			ok++
		} else if i > 0 {
			t.Fatalf("call %d after the fallback: %+v", i, g)
		}
		drain(s.seen)
	}
	if ok < 2 {
		t.Fatalf("%d of 3 calls worked", ok)
	}
}

// After the peer restarts (with the link), the caller's kept-alive link
// connections are all stale: no call may fail because of them.
func TestLinkPeerRestart(t *testing.T) {
	s := startServer(t, 0, appAnswer)
	addr := s.l.Addrs()[0].String()
	c := linkCluster(t, s, true)
	_ = invokeVia(t, c, "m") // learns the link
	// Several calls at once leave several kept-alive connections.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = invokeVia(t, c, "m")
		}()
	}
	wg.Wait()
	drain(s.seen)
	if s.l.linkServed.Load() == 0 {
		t.Fatal("the link was never used")
	}
	l2 := restart(t, s, addr, &config.Config{AppID: "orders"})
	for i := 0; i < 20; i++ {
		if g := invokeVia(t, c, "m"); g.status != 201 {
			t.Fatalf("call %d after the restart: %+v", i, g)
		}
		drain(s.seen)
	}
	if l2.linkServed.Load() == 0 {
		t.Fatal("the calls after the restart did not use the link")
	}
}

// A call retried over gRPC after its link attempt failed carries none of
// the link's own headers to the app.
func TestLinkRetryOverGRPCCarriesNoLinkHeaders(t *testing.T) {
	s := startServer(t, 0, appAnswer)
	addr := s.l.Addrs()[0].String()
	c := linkCluster(t, s, true)
	for i := 0; i < 2; i++ {
		_ = invokeVia(t, c, "m")
		drain(s.seen)
	}
	if s.l.linkServed.Load() == 0 {
		t.Fatal("the link was never used")
	}
	off := false
	restart(t, s, addr, &config.Config{AppID: "orders", InternalHTTP: &off}) // without the link
	if g := invokeIdem(t, c, "m", true); g.status != 201 {
		t.Fatalf("the idempotent call was not retried over gRPC: %+v", g)
	}
	h := s.last(t).headers
	for _, k := range []string{"switchyard-link", "switchyard-timeout"} {
		if _, ok := h[k]; ok {
			t.Errorf("header %s reached the app: %v", k, h)
		}
	}
}

// restart closes s's listener and starts another with the same chain on the
// same address, configured by cfg.
func restart(t *testing.T, s *server, addr string, cfg *config.Config) *Listener {
	t.Helper()
	_ = s.l.Close(context.Background())
	l, err := Start(config.Listener{Name: "dapr_internal", Kind: config.ListenerInternal, Addresses: []string{addr}}, s.ref, runtimeOf(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

func drain(c chan seen) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// BenchmarkInvokeRemote is one invocation from a sidecar cluster to this
// listener and back over loopback, over the peer link and over gRPC.
func BenchmarkInvokeRemote(b *testing.B) {
	for _, tr := range []struct {
		name string
		link bool
	}{{"link", true}, {"grpc", false}} {
		b.Run(tr.name, func(b *testing.B) {
			app := func(_ context.Context, ex *filters.Exchange) error {
				ex.Resp.SetStatusCode(200)
				ex.Resp.SetBodyString("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
				return nil
			}
			s := startServer(b, 0, app)
			s.ref.Store(chainOf(app)) // without the recorder
			c, err := sidecar.New(sidecar.Options{Name: "orders", AppID: "orders", SelfAppID: "checkout",
				Endpoints: []string{s.l.Addrs()[0].String()}, Link: tr.link})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			run := func() {
				ex.Req.Reset()
				ex.Resp.Reset()
				ex.Req.SetRequestURI("/v1.0/invoke/orders/method/echo")
				ex.Req.Header.SetMethod("POST")
				ex.Req.Header.SetContentType("application/json")
				ex.Req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
				ex.Req.SetBodyString(`{"hello":"world"}`)
				ex.SetInvoke([]byte("orders"), []byte("echo"))
				if err := c.Handle(context.Background(), ex); err != nil || ex.Resp.StatusCode() != 200 {
					b.Fatalf("%v %d", err, ex.Resp.StatusCode())
				}
			}
			for range 10 {
				run()
			}
			if got := s.l.linkServed.Load() > 0; got != tr.link {
				b.Fatalf("link used: %v, want %v", got, tr.link)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				run()
			}
		})
	}
}

// A body of megabytes crosses the link whole, both ways.
func TestLinkLargeBody(t *testing.T) {
	s := startServer(t, 0, func(_ context.Context, ex *filters.Exchange) error {
		ex.Resp.SetStatusCode(200)
		ex.Resp.SetBody(ex.Req.Body())
		return nil
	})
	c := linkCluster(t, s, true)
	body := strings.Repeat("0123456789abcdef", 3<<16) // 3 MiB
	for i := 0; i < 2; i++ {                          // over gRPC, then the link
		ex := filters.AcquireExchange(true)
		ex.Req.Header.SetMethod("POST")
		ex.Req.SetBodyString(body)
		ex.SetInvoke([]byte("orders"), []byte("big"))
		if err := c.Handle(ctx10(t), ex); err != nil {
			t.Fatal(err)
		}
		if got := ex.Resp.Body(); string(got) != body {
			t.Fatalf("call %d: %d bytes back, want %d", i, len(got), len(body))
		}
		filters.ReleaseExchange(ex)
		drain(s.seen)
	}
	if s.l.linkServed.Load() != 1 {
		t.Fatalf("link served %d, want 1", s.l.linkServed.Load())
	}
}

// The port sorts connections by their first bytes: plain HTTP/1.1 without
// the link marker is refused with a Dapr error, a connection that sends
// nothing does not hold up the others, and gRPC keeps working beside both.
func TestLinkPortSorting(t *testing.T) {
	s := startServer(t, 0, appAnswer)
	addr := s.l.Addrs()[0].String()

	idle, err := net.Dial("tcp", addr) // says nothing
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	short, err := net.Dial("tcp", addr) // two bytes, then nothing
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	_, _ = short.Write([]byte("PR"))

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 400") {
		t.Fatalf("a request without the marker: %q %v", line, err)
	}
	var hdrs []string
	for {
		l, err := br.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
		hdrs = append(hdrs, strings.TrimSpace(l))
	}
	if !containsFold(hdrs, "Switchyard-Error: ERR_DIRECT_INVOKE") {
		t.Fatalf("headers %q", hdrs)
	}
	select {
	case v := <-s.seen:
		t.Fatalf("the chain ran for a request without the marker: %+v", v)
	default:
	}

	// gRPC beside them.
	if _, err := s.cli.CallLocal(ctx10(t), invokeRequest()); err != nil {
		t.Fatal(err)
	}
	_ = s.last(t)
}

func containsFold(list []string, want string) bool {
	for _, s := range list {
		if strings.EqualFold(s, want) {
			return true
		}
	}
	return false
}

func TestPrefixConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	pc := &listeners.PrefixConn{Conn: b, Head: []byte("PRI ")}
	go func() { _, _ = a.Write([]byte("* HTTP/2.0")) }()
	buf := make([]byte, 2)
	var got []byte
	for len(got) < len("PRI * HTTP/2.0") {
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "PRI * HTTP/2.0" {
		t.Fatalf("read %q", got)
	}
}

// The callee's chain gets the same context over both transports: the
// caller's deadline, and no cancellation when the listener starts a
// graceful close (calls in flight finish, as grpc-go's GracefulStop lets
// them).
func TestLinkCalleeContext(t *testing.T) {
	for _, tr := range []struct {
		name string
		link bool
	}{{"grpc", false}, {"link", true}} {
		t.Run(tr.name, func(t *testing.T) {
			type result struct {
				deadline bool
				canceled bool
			}
			results := make(chan result, 1)
			release := make(chan struct{})
			s := startServer(t, 0, func(ctx context.Context, ex *filters.Exchange) error {
				if string(ex.Method) != "wait" {
					return appAnswer(ctx, ex)
				}
				_, dl := ctx.Deadline()
				r := result{deadline: dl}
				select {
				case <-ctx.Done():
					r.canceled = true
				case <-release:
				}
				results <- r
				if r.canceled {
					return ctx.Err()
				}
				return appAnswer(ctx, ex)
			})
			c := linkCluster(t, s, tr.link)
			_ = invokeVia(t, c, "m") // learns the link
			_ = s.last(t)
			callCtx := func(ctx context.Context, timeout time.Duration) (got, bool) {
				ex := filters.AcquireExchange(true)
				defer filters.ReleaseExchange(ex)
				ex.Req.Header.SetMethod("POST")
				ex.SetInvoke([]byte("orders"), []byte("wait"))
				ex.Timeout = timeout
				err := c.Handle(ctx, ex)
				return got{status: ex.Resp.StatusCode()}, err == nil
			}
			call := func(timeout time.Duration) (got, bool) { return callCtx(context.Background(), timeout) }

			// The caller's deadline reaches the callee, which stops waiting.
			start := time.Now()
			if _, ok := call(300 * time.Millisecond); ok {
				t.Fatal("a call past its deadline worked")
			}
			select {
			case r := <-results:
				if !r.deadline || !r.canceled {
					t.Fatalf("the callee's context: deadline %v, canceled %v; want both", r.deadline, r.canceled)
				}
			case <-time.After(5 * time.Second):
				close(release)
				t.Fatal("the callee never saw the caller's deadline")
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("took %v", d)
			}
			_ = s.last(t)
			if tr.link && s.l.linkServed.Load() == 0 {
				t.Fatal("the call did not come over the link")
			}

			// A caller that gives up (its own client went away) cancels
			// the callee's call.
			cctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			if _, ok := callCtx(cctx, 0); ok {
				t.Fatal("a canceled call worked")
			}
			select {
			case r := <-results:
				if r.deadline || !r.canceled {
					t.Fatalf("the callee's context: deadline %v, canceled %v; want canceled without a deadline", r.deadline, r.canceled)
				}
			case <-time.After(5 * time.Second):
				close(release)
				t.Fatal("the callee's call was not canceled")
			}
			_ = s.last(t)

			// A graceful close lets the call in flight finish.
			done := make(chan got, 1)
			go func() {
				g, _ := call(0)
				done <- g
			}()
			_ = s.last(t) // the chain runs
			closed := make(chan struct{})
			go func() {
				_ = s.l.Close(ctx10(t))
				close(closed)
			}()
			// The close has begun once the port refuses new connections.
			for {
				conn, err := net.DialTimeout("tcp", s.l.Addrs()[0].String(), time.Second)
				if err != nil {
					break
				}
				conn.Close()
				time.Sleep(5 * time.Millisecond)
			}
			close(release)
			if r := <-results; r.canceled {
				t.Fatal("a graceful close canceled the call in flight")
			}
			if g := <-done; g.status != 201 {
				t.Fatalf("the call in flight got %+v", g)
			}
			<-closed
		})
	}
}

// flakyListener fails its first Accept the way accept(2) does when the
// process is out of file descriptors, then works.
type flakyListener struct {
	net.Listener
	failed bool
}

type tempErr struct{}

func (tempErr) Error() string   { return "accept: too many open files" }
func (tempErr) Timeout() bool   { return false }
func (tempErr) Temporary() bool { return true }

func (l *flakyListener) Accept() (net.Conn, error) {
	if !l.failed {
		l.failed = true
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: tempErr{}}
	}
	return l.Listener.Accept()
}

// A temporary accept error (EMFILE) does not close the port, as it does
// not close grpc-go's or fasthttp's own.
func TestMuxTemporaryAcceptError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMux(&flakyListener{Listener: ln}, nil, zap.NewNop())
	defer m.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\n"))
	c, err := m.http.Accept()
	if err != nil {
		t.Fatalf("the mux stopped after a temporary accept error: %v", err)
	}
	c.Close()
}

// prefaceAs is a caller's connection whose first bytes (the link's preface)
// are sent as pre instead: a caller of another version of the link.
type prefaceAs struct {
	net.Conn
	pre  string
	done bool
}

func (c *prefaceAs) Write(p []byte) (int, error) {
	if !c.done && len(p) >= len(c.pre) {
		c.done = true
		q := append([]byte(c.pre), p[len(c.pre):]...)
		return c.Conn.Write(q)
	}
	return c.Conn.Write(p)
}

// The port serves callers of the link's version 2 (no PINGs) as well as of
// version 3, and its CallLocal answers offer both; a version 3 caller's
// PINGs are answered, so its call outlives many keepalive periods.
func TestLinkVersions(t *testing.T) {
	s := startServer(t, 0, func(ctx context.Context, ex *filters.Exchange) error {
		time.Sleep(200 * time.Millisecond) // 20 keepalive periods of the caller below
		return appAnswer(ctx, ex)
	})
	addr := s.l.Addrs()[0].String()
	var hdr metadata.MD
	if _, err := s.cli.CallLocal(ctx10(t), invokeRequest(), grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	_ = s.last(t)
	if got := hdr.Get(peerhttp.MDOffer); !reflect.DeepEqual(got, []string{peerhttp.Version, peerhttp.MuxVersionV2, peerhttp.MuxVersion}) {
		t.Fatalf("offer %q, want versions 1, 2 and 3", got)
	}
	for _, pre := range []string{peerhttp.MuxPrefaceV2, peerhttp.MuxPreface} {
		served := s.l.linkServed.Load()
		c := peerhttp.NewClient(addr, func(ctx context.Context) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &prefaceAs{Conn: nc, pre: pre}, nil
		}, time.Minute, 10*time.Millisecond)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.Header.SetMethod("POST")
		req.SetRequestURI("/m")
		req.Header.SetHost("peer")
		req.Header.Set(grpcwire.MDCallerID, "checkout")
		peerhttp.PrepareRequest(&req.Header)
		req.SetBodyString("hi")
		err := c.Do(ctx10(t), req, resp)
		c.Close()
		if err != nil {
			t.Fatalf("preface %s: %v", pre, err)
		}
		if resp.StatusCode() != 201 || s.l.linkServed.Load() != served+1 {
			t.Fatalf("preface %s: status %d, %d calls served over the link", pre, resp.StatusCode(), s.l.linkServed.Load()-served)
		}
		if v := s.last(t); v.caller != "checkout" {
			t.Fatalf("preface %s: the chain saw caller %q", pre, v.caller)
		}
	}
}
