package grpcapp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
)

// app is an AppCallback server on 127.0.0.1 standing in for the local app.
type app struct {
	runtimev1pb.UnimplementedAppCallbackServer
	addr  string
	calls atomic.Int32

	// invoke answers OnInvoke when set; the default echoes the data.
	invoke func(ctx context.Context, n int32, in *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error)
	// topic answers OnTopicEvent.
	topicStatus runtimev1pb.TopicEventResponse_TopicEventResponseStatus
	topicErr    error

	mu          sync.Mutex
	lastInvoke  *commonv1pb.InvokeRequest
	lastTopic   *runtimev1pb.TopicEventRequest
	lastMD      metadata.MD
	hadDeadline bool
}

func (a *app) record(ctx context.Context, inv *commonv1pb.InvokeRequest, te *runtimev1pb.TopicEventRequest) int32 {
	md, _ := metadata.FromIncomingContext(ctx)
	_, dl := ctx.Deadline()
	a.mu.Lock()
	a.lastInvoke, a.lastTopic, a.lastMD, a.hadDeadline = inv, te, md.Copy(), dl
	a.mu.Unlock()
	return a.calls.Add(1)
}

func (a *app) seen() (*commonv1pb.InvokeRequest, *runtimev1pb.TopicEventRequest, metadata.MD, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastInvoke, a.lastTopic, a.lastMD, a.hadDeadline
}

func (a *app) OnInvoke(ctx context.Context, in *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
	n := a.record(ctx, in, nil)
	if a.invoke != nil {
		return a.invoke(ctx, n, in)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-app-header", "h", "x-blob-bin", "\x00\x01"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t"))
	return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: in.GetData().GetValue()}, ContentType: "text/plain"}, nil
}

func (a *app) OnTopicEvent(ctx context.Context, in *runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	a.record(ctx, nil, in)
	if a.topicErr != nil {
		return nil, a.topicErr
	}
	return &runtimev1pb.TopicEventResponse{Status: a.topicStatus}, nil
}

func startApp(t testing.TB, a *app) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	srv := grpc.NewServer()
	runtimev1pb.RegisterAppCallbackServer(srv, a)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return a
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

func newCluster(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Name == "" {
		o.Name = "app"
	}
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

// invocation is orders/<method> as a listener hands it over.
func invocation(verb, uri, method, body string) *filters.Exchange {
	ex := filters.AcquireExchange(true)
	ex.Req.Header.SetMethod(verb)
	ex.Req.SetRequestURI(uri)
	ex.Req.SetBodyString(body)
	ex.SetInvoke([]byte("orders"), []byte(method))
	return ex
}

func call(c *Cluster, ctx context.Context, ex *filters.Exchange) (string, error) {
	defer filters.ReleaseExchange(ex)
	if err := c.Handle(ctx, ex); err != nil {
		return "", err
	}
	return string(ex.Resp.Body()), nil
}

func asError(t *testing.T, err error) *filters.Error {
	t.Helper()
	var e *filters.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *filters.Error", err, err)
	}
	return e
}

// daprError asserts the Dapr error of an invocation the app never answered.
func daprError(t *testing.T, err error, want codes.Code) *filters.Error {
	t.Helper()
	e := asError(t, err)
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
		{"one endpoint", Options{Name: "app", Endpoints: []string{"127.0.0.1:1"}}, ""},
		{"no endpoints", Options{Name: "app"}, "grpcapp: app: no endpoints"},
		{"endpoint without port", Options{Name: "app", Endpoints: []string{"127.0.0.1"}}, `grpcapp: app: endpoint "127.0.0.1"`},
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

// TestKindRegistered: the "grpc" cluster kind builds this cluster from a
// cluster config and the sidecar's settings (the local app over gRPC).
func TestKindRegistered(t *testing.T) {
	a := startApp(t, &app{})
	m := clusters.NewManager(nil, time.Minute)
	defer m.Close()
	cfg := &config.Config{AppID: "orders", AppPort: port(t, a.addr), AppProtocol: "grpc"}
	p, err := m.Prepare(context.Background(), cfg, clusters.Env{AppID: "orders", AppAPIToken: "app-secret"})
	if err != nil {
		t.Fatal(err)
	}
	p.Commit()
	h, err := m.Current().App([]byte("orders"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.(*Cluster); !ok {
		t.Fatalf("the local app of a gRPC sidecar is a %T", h)
	}
	ex := invocation("POST", "/", "m", "hi")
	defer filters.ReleaseExchange(ex)
	if err := h.Handle(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	_, _, md, _ := a.seen()
	if got := md.Get("dapr-api-token"); len(got) != 1 || got[0] != "app-secret" {
		t.Fatalf("dapr-api-token %q: the env's app token was not used", got)
	}
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInvoke: OnInvoke gets the method, data, content type, verb and query;
// the answer fills the response with 200, the app's content type, body and
// header metadata (binary keys left out); trailers go to the listener.
func TestInvoke(t *testing.T) {
	a := startApp(t, &app{})
	c := newCluster(t, Options{Endpoints: []string{a.addr}})
	ex := invocation("PUT", "/v1.0/invoke/orders/method/orders/42?x=1&y=two", "orders/42", `{"n":1}`)
	defer filters.ReleaseExchange(ex)
	ex.Req.Header.SetContentType("application/json")
	if err := c.Handle(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	in, _, _, _ := a.seen()
	want := &commonv1pb.InvokeRequest{
		Method:        "orders/42",
		Data:          &anypb.Any{Value: []byte(`{"n":1}`)},
		ContentType:   "application/json",
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_PUT, Querystring: "x=1&y=two"},
	}
	if !proto.Equal(in, want) {
		t.Fatalf("OnInvoke got\n%v\nwant\n%v", in, want)
	}
	r := ex.Resp
	if r.StatusCode() != 200 || string(r.Body()) != `{"n":1}` || string(r.Header.ContentType()) != "text/plain" {
		t.Fatalf("response %d %q %q", r.StatusCode(), r.Body(), r.Header.ContentType())
	}
	if got := string(r.Header.Peek("x-app-header")); got != "h" {
		t.Errorf("x-app-header %q, want the app's header metadata", got)
	}
	if got := r.Header.Peek("x-blob-bin"); got != nil {
		t.Errorf("binary header metadata became a header: %q", got)
	}
	trl, _ := ex.Value(grpcwire.TrailerKey).(metadata.MD)
	if got := trl.Get("x-trailer"); len(got) != 1 || got[0] != "t" {
		t.Errorf("trailers %v, want x-trailer: t", trl)
	}
}

// TestOutgoingMetadata: request headers become metadata except transport
// and gRPC-reserved ones (the trace context excepted); "-bin" values are
// base64-decoded; the identity headers are set by the sidecar, and the
// caller's Dapr API token never reaches the app.
func TestOutgoingMetadata(t *testing.T) {
	a := startApp(t, &app{})
	b64 := base64.StdEncoding.EncodeToString
	cases := []struct {
		name     string
		appToken string
		caller   string
		want     map[string][]string
		absent   []string
	}{
		{
			name: "self invocation, no app token",
			want: map[string][]string{
				"x-custom": {"v"}, "x-multi": {"a", "b"}, "x-data-bin": {"\xff\x00"}, "grpc-trace-bin": {"\x00\x01\x02"},
				"dapr-caller-app-id": {"orders"}, "dapr-callee-app-id": {"orders"},
			},
			absent: []string{"dapr-api-token", "x-bad-bin", "connection", "keep-alive", "upgrade", "te", "trailer", "grpc-accept-encoding-x", "grpc-custom"},
		},
		{
			name: "remote caller, app token", appToken: "app-secret", caller: "frontend",
			want: map[string][]string{
				"x-custom": {"v"}, "dapr-caller-app-id": {"frontend"}, "dapr-callee-app-id": {"orders"}, "dapr-api-token": {"app-secret"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, Options{Endpoints: []string{a.addr}, AppAPIToken: tc.appToken})
			ex := invocation("POST", "/v1.0/invoke/orders/method/m", "m", "x")
			for _, h := range [][2]string{
				{"X-Custom", "v"}, {"X-Multi", "a"}, {"X-Multi", "b"},
				{"X-Data-Bin", b64([]byte("\xff\x00"))}, {"X-Bad-Bin", "!!not base64!!"},
				{"Grpc-Trace-Bin", b64([]byte("\x00\x01\x02"))}, {"Grpc-Custom", "1"}, {"Grpc-Accept-Encoding-X", "1"},
				{"Connection", "keep-alive"}, {"Keep-Alive", "timeout=5"}, {"Upgrade", "h2c"}, {"Te", "trailers"}, {"Trailer", "x"},
				{"User-Agent", "curl/8"}, {"dapr-api-token", "the-dapr-api-token"},
				{"dapr-caller-app-id", "spoofed"}, {"dapr-callee-app-id", "spoofed"},
			} {
				ex.Req.Header.Add(h[0], h[1])
			}
			ex.CallerAppID = []byte(tc.caller)
			if _, err := call(c, context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			_, _, md, _ := a.seen()
			for k, want := range tc.want {
				if got := md.Get(k); !equal(got, want) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			for _, k := range tc.absent {
				if got := md.Get(k); got != nil {
					t.Errorf("%s reached the app: %q", k, got)
				}
			}
			if ua := md.Get("user-agent"); len(ua) != 1 || strings.Contains(ua[0], "curl") {
				t.Errorf("user-agent %q: the client's user agent was forwarded", ua)
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAppStatus: a status the app answers keeps its code and message, with
// the HTTP status grpc-gateway maps it to.
func TestAppStatus(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantHTTP int
	}{
		{"not found", status.Error(codes.NotFound, "no such order"), codes.NotFound, 404},
		{"invalid argument", status.Error(codes.InvalidArgument, "bad order"), codes.InvalidArgument, 400},
		{"unavailable from the app itself", status.Error(codes.Unavailable, "try later"), codes.Unavailable, 503},
		{"plain error", errors.New("boom"), codes.Unknown, 500},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, &app{invoke: func(context.Context, int32, *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
				return nil, tc.err
			}})
			c := newCluster(t, Options{Endpoints: []string{a.addr}})
			_, err := call(c, context.Background(), invocation("POST", "/", "m", "x"))
			e := asError(t, err)
			st, _ := status.FromError(tc.err)
			if e.Code != filters.ErrCodeDirectInvoke || e.GRPCCode != tc.wantCode || e.HTTPStatus != tc.wantHTTP || e.Message != st.Message() {
				t.Fatalf("error %s/%v/%d %q, want %s/%v/%d %q", e.Code, e.GRPCCode, e.HTTPStatus, e.Message,
					filters.ErrCodeDirectInvoke, tc.wantCode, tc.wantHTTP, st.Message())
			}
		})
	}
}

// TestAppDown: an app that refuses connections is a Dapr ERR_DIRECT_INVOKE,
// 500, Unavailable.
func TestAppDown(t *testing.T) {
	c := newCluster(t, Options{Endpoints: []string{deadAddr(t)}})
	for range 2 {
		_, err := call(c, context.Background(), invocation("POST", "/", "m", "x"))
		daprError(t, err, codes.Unavailable)
	}
}

// TestTimeout: the route's timeout (ex.Timeout) wins over the cluster's;
// the app sees the deadline and the call ends with DeadlineExceeded.
func TestTimeout(t *testing.T) {
	a := startApp(t, &app{invoke: func(ctx context.Context, _ int32, _ *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
		if _, ok := ctx.Deadline(); !ok {
			return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: []byte("no deadline")}}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Second): // the test's deadline was not applied
			return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: []byte("not cut short")}}, nil
		}
	}})
	cases := []struct {
		name           string
		cluster, route time.Duration
		wantDeadline   bool
	}{
		{"cluster timeout", 50 * time.Millisecond, 0, true},
		{"route timeout wins", time.Hour, 50 * time.Millisecond, true},
		{"no timeout", 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, Options{Endpoints: []string{a.addr}, Timeout: tc.cluster})
			ex := invocation("POST", "/", "m", "x")
			ex.Timeout = tc.route
			start := time.Now()
			body, err := call(c, context.Background(), ex)
			if !tc.wantDeadline {
				if err != nil || body != "no deadline" {
					t.Fatalf("got %q %v, want an answer without a deadline", body, err)
				}
				return
			}
			e := asError(t, err)
			if e.GRPCCode != codes.DeadlineExceeded || e.HTTPStatus != 504 || e.Code != filters.ErrCodeDirectInvoke {
				t.Fatalf("error %s/%v/%d %q, want DeadlineExceeded/504", e.Code, e.GRPCCode, e.HTTPStatus, e.Message)
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Fatalf("the call took %v", el)
			}
		})
	}
}

// gate blocks OnInvoke until the test opens it; tests defer open so that it
// runs before the app stops.
type gate struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate() *gate {
	g := &gate{entered: make(chan struct{}, 16), release: make(chan struct{})}
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the app never received the call")
	}
}

// TestMaxConcurrency: with max_concurrency 1 a second call waits for the
// first; it never reaches the app while the first runs, gives up when its
// context ends, and goes through once the slot is free.
func TestMaxConcurrency(t *testing.T) {
	g := newGate()
	defer g.open()
	a := startApp(t, &app{invoke: func(_ context.Context, n int32, _ *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
		if n == 1 {
			g.entered <- struct{}{}
			<-g.release
		}
		return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: []byte(fmt.Sprint(n))}}, nil
	}})
	c := newCluster(t, Options{Endpoints: []string{a.addr}, MaxConcurrency: 1})
	first := make(chan error, 1)
	go func() {
		_, err := call(c, context.Background(), invocation("POST", "/", "m", "1"))
		first <- err
	}()
	g.waitEntered(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	second := make(chan error, 1)
	go func() {
		_, err := call(c, ctx, invocation("POST", "/", "m", "2"))
		second <- err
	}()
	select {
	case err := <-second:
		daprError(t, err, codes.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("a call over max_concurrency reached the app")
	}
	if n := a.calls.Load(); n != 1 {
		t.Fatalf("the app got %d calls, want 1", n)
	}

	// The route timeout covers the wait for a slot.
	ex := invocation("POST", "/", "m", "timeout")
	ex.Timeout = 30 * time.Millisecond
	if _, err := call(c, context.Background(), ex); err == nil {
		t.Fatal("a call over max_concurrency was answered while the slot was taken")
	} else {
		daprError(t, err, codes.DeadlineExceeded)
	}
	if n := a.calls.Load(); n != 1 {
		t.Fatalf("the app got %d calls, want 1", n)
	}

	third := make(chan error, 1)
	go func() {
		body, err := call(c, context.Background(), invocation("POST", "/", "m", "3"))
		if err == nil && body != "2" {
			err = fmt.Errorf("body %q, want the app's second call", body)
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
			t.Fatal("a call never finished")
		}
	}
}

// TestRoundRobin spreads calls over the endpoints, one connection each.
func TestRoundRobin(t *testing.T) {
	a, b := startApp(t, &app{}), startApp(t, &app{})
	c := newCluster(t, Options{Endpoints: []string{a.addr, b.addr}})
	for range 10 {
		if _, err := call(c, context.Background(), invocation("POST", "/", "m", "x")); err != nil {
			t.Fatal(err)
		}
	}
	if a.calls.Load() != 5 || b.calls.Load() != 5 {
		t.Fatalf("split %d/%d, want 5/5", a.calls.Load(), b.calls.Load())
	}
}

// TestClose: a closed cluster fails calls as a Dapr error, whether it had
// connected or not, and Close may be called twice.
func TestClose(t *testing.T) {
	a := startApp(t, &app{})
	t.Run("before first use", func(t *testing.T) {
		c := newCluster(t, Options{Endpoints: []string{a.addr}})
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := call(c, context.Background(), invocation("POST", "/", "m", "x"))
		e := daprError(t, err, codes.Internal)
		if !strings.Contains(e.Message, "grpcapp: app: closed") {
			t.Fatalf("message %q", e.Message)
		}
	})
	t.Run("after use", func(t *testing.T) {
		c := newCluster(t, Options{Endpoints: []string{a.addr}})
		if _, err := call(c, context.Background(), invocation("POST", "/", "m", "x")); err != nil {
			t.Fatal(err)
		}
		before := a.calls.Load()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		_, err := call(c, context.Background(), invocation("POST", "/", "m", "x"))
		if e := asError(t, err); e.Code != filters.ErrCodeDirectInvoke || e.GRPCCode == codes.OK {
			t.Fatalf("error %+v", e)
		}
		if a.calls.Load() != before {
			t.Fatal("a closed cluster still reached the app")
		}
	})
}

// delivery is a broker message on its way to the app's route.
func delivery(body string) *filters.Exchange {
	ex := filters.AcquireExchange(true)
	ex.Req.Header.SetMethod("POST")
	ex.Req.SetBodyString(body)
	ex.SetPublish(true, []byte("pubsub"), []byte("orders"))
	ex.Method = []byte("/orders-handler")
	return ex
}

// TestDeliver: OnTopicEvent gets the CloudEvent's fields, and its answer
// becomes what an HTTP app would have answered.
func TestDeliver(t *testing.T) {
	cases := []struct {
		name   string
		status runtimev1pb.TopicEventResponse_TopicEventResponseStatus
		want   string
	}{
		{"success", runtimev1pb.TopicEventResponse_SUCCESS, `{"status":"SUCCESS"}`},
		{"retry", runtimev1pb.TopicEventResponse_RETRY, `{"status":"RETRY"}`},
		{"drop", runtimev1pb.TopicEventResponse_DROP, `{"status":"DROP"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, &app{topicStatus: tc.status})
			c := newCluster(t, Options{Endpoints: []string{a.addr}, AppAPIToken: "app-secret"})
			ex := delivery(`{"id":"1","source":"src","type":"com.example","specversion":"1.0","datacontenttype":"application/json",` +
				`"topic":"orders","pubsubname":"pubsub","data":{"n":1},"traceparent":"00-abc-def-01","custom":5}`)
			defer filters.ReleaseExchange(ex)
			if err := c.Handle(context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			if ex.Resp.StatusCode() != 200 || string(ex.Resp.Body()) != tc.want || string(ex.Resp.Header.ContentType()) != "application/json" {
				t.Fatalf("response %d %q %q, want 200 %s", ex.Resp.StatusCode(), ex.Resp.Body(), ex.Resp.Header.ContentType(), tc.want)
			}
			_, te, md, _ := a.seen()
			ext, _ := structpb.NewStruct(map[string]any{"traceparent": "00-abc-def-01", "custom": 5})
			want := &runtimev1pb.TopicEventRequest{
				Id: "1", Source: "src", Type: "com.example", SpecVersion: "1.0", DataContentType: "application/json",
				Topic: "orders", PubsubName: "pubsub", Path: "/orders-handler", Data: []byte(`{"n":1}`), Extensions: ext,
			}
			if !proto.Equal(te, want) {
				t.Fatalf("OnTopicEvent got\n%v\nwant\n%v", te, want)
			}
			if got := md.Get("dapr-api-token"); len(got) != 1 || got[0] != "app-secret" {
				t.Fatalf("dapr-api-token %q", got)
			}
		})
	}
}

// TestTopicEventRequest: how the CloudEvent's data and routing fields map.
func TestTopicEventRequest(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("\x00binary"))
	cases := []struct {
		name                    string
		body                    string
		wantData                string
		wantTopic, wantPubsub   string
		wantExtensions, wantErr bool
	}{
		{"json data kept as JSON", `{"datacontenttype":"application/json","data":{"a":[1,2]}}`, `{"a":[1,2]}`, "orders", "pubsub", false, false},
		{"text data unquoted", `{"datacontenttype":"text/plain","data":"hello"}`, "hello", "orders", "pubsub", false, false},
		{"json string data stays JSON", `{"datacontenttype":"application/json","data":"hello"}`, `"hello"`, "orders", "pubsub", false, false},
		{"no content type, string data", `{"data":"hello"}`, "hello", "orders", "pubsub", false, false},
		{"data_base64 decoded", `{"datacontenttype":"application/octet-stream","data_base64":"` + b64 + `"}`, "\x00binary", "orders", "pubsub", false, false},
		{"topic and pubsub from the event win", `{"topic":"t2","pubsubname":"ps2","data":"x"}`, "x", "t2", "ps2", false, false},
		{"unknown fields become extensions", `{"data":"x","tenant":"acme"}`, "x", "orders", "pubsub", true, false},
		{"not JSON", `not a cloud event`, "", "", "", false, true},
		{"bad data_base64", `{"data_base64":"%%%"}`, "", "", "", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex := delivery(tc.body)
			defer filters.ReleaseExchange(ex)
			req, err := TopicEventRequest(ex)
			if tc.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), "grpcapp: ") {
					t.Fatalf("err %v, want a grpcapp error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(req.GetData()) != tc.wantData || req.GetTopic() != tc.wantTopic || req.GetPubsubName() != tc.wantPubsub || req.GetPath() != "/orders-handler" {
				t.Fatalf("data %q topic %q pubsub %q path %q", req.GetData(), req.GetTopic(), req.GetPubsubName(), req.GetPath())
			}
			if got := req.GetExtensions() != nil; got != tc.wantExtensions {
				t.Fatalf("extensions %v", req.GetExtensions())
			}
			if tc.wantExtensions && req.GetExtensions().GetFields()["tenant"].GetStringValue() != "acme" {
				t.Fatalf("extensions %v", req.GetExtensions())
			}
		})
	}
}

// TestDeliverErrors: a body that is not a CloudEvent is refused before the
// app is called; an app error is the app's status.
func TestDeliverErrors(t *testing.T) {
	t.Run("not a CloudEvent", func(t *testing.T) {
		a := startApp(t, &app{})
		c := newCluster(t, Options{Endpoints: []string{a.addr}})
		_, err := call(c, context.Background(), delivery("nope"))
		e := asError(t, err)
		if e.Code != filters.ErrCodePubSubCloudEvents || e.HTTPStatus != 400 || e.GRPCCode != codes.InvalidArgument {
			t.Fatalf("error %s/%d/%v", e.Code, e.HTTPStatus, e.GRPCCode)
		}
		if a.calls.Load() != 0 {
			t.Fatal("the app was called")
		}
	})
	t.Run("app error", func(t *testing.T) {
		a := startApp(t, &app{topicErr: status.Error(codes.Internal, "db down")})
		c := newCluster(t, Options{Endpoints: []string{a.addr}})
		_, err := call(c, context.Background(), delivery(`{"data":"x"}`))
		if e := asError(t, err); e.GRPCCode != codes.Internal || e.Message != "db down" {
			t.Fatalf("error %v/%q", e.GRPCCode, e.Message)
		}
	})
	t.Run("app down", func(t *testing.T) {
		c := newCluster(t, Options{Endpoints: []string{deadAddr(t)}})
		ex := delivery(`{"data":"x"}`)
		ex.AppID = []byte("orders")
		_, err := call(c, context.Background(), ex)
		daprError(t, err, codes.Unavailable)
	})
}

// front is a gRPC listener that proxies every unknown service through c,
// as the gRPC API listener does for dapr-app-id calls.
func front(t testing.TB, c *Cluster) runtimev1pb.AppCallbackClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		ex := filters.AcquireExchange(true)
		defer filters.ReleaseExchange(ex)
		ex.Req.Header.SetMethod("POST")
		ex.Stream = &grpcwire.ServerStream{ServerStream: ss, Method: method}
		ex.SetInvoke([]byte("orders"), []byte(grpcwire.RouteMethod(method)))
		if err := c.Handle(ss.Context(), ex); err != nil {
			return grpcwire.Status(err, filters.KindInvoke).Err()
		}
		return nil
	}))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return runtimev1pb.NewAppCallbackClient(cc)
}

// TestProxy: a proxied call reaches the app's own gRPC server with the
// caller's metadata, and the app's answer, headers, trailers and status
// come back. The caller's Dapr API token is replaced by the app token, or
// dropped when there is none, as on invocations.
func TestProxy(t *testing.T) {
	cases := []struct {
		name, appToken string
		wantToken      []string
	}{
		{"app token", "app-secret", []string{"app-secret"}},
		{"no app token", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, &app{})
			client := front(t, newCluster(t, Options{Endpoints: []string{a.addr}, AppAPIToken: tc.appToken}))
			ctx := metadata.AppendToOutgoingContext(context.Background(),
				"dapr-app-id", "orders", "x-custom", "v", "dapr-api-token", "the-dapr-api-token")
			var hdr, trl metadata.MD
			resp, err := client.OnInvoke(ctx, &commonv1pb.InvokeRequest{Method: "m", Data: &anypb.Any{Value: []byte("hello")}},
				grpc.Header(&hdr), grpc.Trailer(&trl))
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.GetData().GetValue()) != "hello" || resp.GetContentType() != "text/plain" {
				t.Fatalf("response %v", resp)
			}
			if hdr.Get("x-app-header")[0] != "h" || len(trl.Get("x-trailer")) != 1 {
				t.Fatalf("headers %v trailers %v", hdr, trl)
			}
			in, _, md, _ := a.seen()
			if in.GetMethod() != "m" || md.Get("x-custom")[0] != "v" || md.Get("dapr-app-id")[0] != "orders" {
				t.Fatalf("the app got %v with %v", in, md)
			}
			if got := md.Get("dapr-api-token"); !equal(got, tc.wantToken) {
				t.Fatalf("dapr-api-token at the app %q, want %q", got, tc.wantToken)
			}
		})
	}
	t.Run("app status", func(t *testing.T) {
		a := startApp(t, &app{invoke: func(context.Context, int32, *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
			return nil, status.Error(codes.NotFound, "no such order")
		}})
		client := front(t, newCluster(t, Options{Endpoints: []string{a.addr}}))
		ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "orders")
		_, err := client.OnInvoke(ctx, &commonv1pb.InvokeRequest{Method: "m"})
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such order" {
			t.Fatalf("status %v", st)
		}
	})
}

// TestStreamUnsupported: a stream from another transport cannot be pumped.
func TestStreamUnsupported(t *testing.T) {
	a := startApp(t, &app{})
	c := newCluster(t, Options{Endpoints: []string{a.addr}})
	ex := invocation("POST", "/", "m", "")
	defer filters.ReleaseExchange(ex)
	ex.Stream = fakeStream{}
	if err := c.Handle(context.Background(), ex); !errors.Is(err, filters.ErrStreamUnsupported) {
		t.Fatalf("err %v, want ErrStreamUnsupported", err)
	}
}

type fakeStream struct{}

func (fakeStream) FullMethod() string { return "/pkg.S/M" }
func (fakeStream) Native() any        { return nil }

func BenchmarkOutgoing(b *testing.B) {
	c, err := New(Options{Name: "app", AppID: "orders", Endpoints: []string{"127.0.0.1:1"}, AppAPIToken: "tok"})
	if err != nil {
		b.Fatal(err)
	}
	ex := invocation("POST", "/v1.0/invoke/orders/method/m", "m", "x")
	defer filters.ReleaseExchange(ex)
	ex.Req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	ex.Req.Header.SetContentType("application/json")
	b.ReportAllocs()
	for b.Loop() {
		_ = c.outgoing(ex)
	}
}

func BenchmarkTopicEventRequest(b *testing.B) {
	ex := delivery(`{"id":"1","source":"src","type":"t","specversion":"1.0","datacontenttype":"application/json","data":{"n":1},"traceparent":"00-a-b-01"}`)
	defer filters.ReleaseExchange(ex)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := TopicEventRequest(ex); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandleInvoke(b *testing.B) {
	a := startApp(b, &app{invoke: func(context.Context, int32, *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
		return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: []byte("ok")}, ContentType: "text/plain"}, nil
	}})
	c := newCluster(b, Options{Endpoints: []string{a.addr}})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ex := invocation("POST", "/v1.0/invoke/orders/method/m?x=1", "m", `{"n":1}`)
			if err := c.Handle(context.Background(), ex); err != nil {
				b.Error(err)
			}
			filters.ReleaseExchange(ex)
		}
	})
}

// echoServer is an app's own gRPC server that echoes every unary call's
// message without parsing it, as the benchmark's echo app does.
func echoServer(b testing.TB) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		f := new(grpcwire.Frame)
		if err := ss.RecvMsg(f); err != nil {
			return err
		}
		return ss.SendMsg(f)
	}))
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// BenchmarkProxy measures unary gRPC proxying through the cluster: a
// listener's stream is pumped to the app's server and back (real sockets
// on 127.0.0.1; the client and the app are in the figures too).
func BenchmarkProxy(b *testing.B) {
	client := front(b, newCluster(b, Options{Endpoints: []string{echoServer(b)}}))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "orders")
	in := &commonv1pb.InvokeRequest{Data: &anypb.Any{Value: []byte(strings.Repeat("x", 64))}} // echoed back, a valid InvokeResponse too
	b.ReportAllocs()
	b.SetParallelism(8) // 16 calls in flight on two cores, as under load
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.OnInvoke(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
