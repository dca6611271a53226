package grpc

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-proxy/switchyard/clusters/grpcapp"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// testApp is the app's gRPC server: UnaryCall echoes the payload and
// answers with the metadata it got as headers ("got-<key>"); a payload
// "sleep" makes it wait 300 ms first.
type testApp struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testApp) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if !strings.HasPrefix(k, ":") {
			out["got-"+k] = v
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		out.Set("got-deadline-ms", strconv.FormatInt(time.Until(dl).Milliseconds(), 10))
	}
	_ = grpc.SetHeader(ctx, out)
	if string(in.GetPayload().GetBody()) == "sleep" {
		time.Sleep(300 * time.Millisecond)
	}
	return &testgrpc.SimpleResponse{Payload: in.GetPayload()}, nil
}

func startTestApp(t testing.TB) string {
	t.Helper()
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, testApp{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// seenCall is what the chain saw of a call.
type seenCall struct {
	native  any
	key     string
	remote  string
	headers map[string]string
}

type fixture struct {
	l    *Listener
	cc   *grpc.ClientConn
	mu   sync.Mutex
	seen []seenCall
}

func (f *fixture) last(t *testing.T) seenCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		t.Fatal("the chain saw no call")
	}
	return f.seen[len(f.seen)-1]
}

// startFixture starts the gRPC API listener for app id "orders" whose
// chain records each call, then runs deny (when it returns an error) or
// sends the call to a gRPC app cluster of the test app.
func startFixture(t testing.TB, frameProxy bool, deny func(*filters.Exchange) error) *fixture {
	t.Helper()
	app, err := grpcapp.New(grpcapp.Options{Name: "app", AppID: "orders", Endpoints: []string{startTestApp(t)}, AppAPIToken: "app-token"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	cfg := &config.Config{AppID: "orders", GRPCFrameProxy: &frameProxy}
	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: stats.NewRegistry("dapr_")}
	m := listeners.NewManager(rt, 0)
	if err := m.Apply(context.Background(), config.NewSnapshot(cfg, "test")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	f := &fixture{}
	ref := &listeners.ChainRef{}
	ref.Store(&filters.Chain{Handler: filters.HandlerFunc(func(ctx context.Context, ex *filters.Exchange) error {
		sc := seenCall{key: string(ex.Key), remote: string(ex.RemoteAddr), headers: map[string]string{}}
		if ex.Stream != nil {
			sc.native = ex.Stream.Native()
		}
		for k, v := range ex.Req.Header.All() {
			sc.headers[strings.ToLower(string(k))] = string(v)
		}
		f.mu.Lock()
		f.seen = append(f.seen, sc)
		f.mu.Unlock()
		if deny != nil {
			if err := deny(ex); errors.Is(err, errAnswered) {
				return nil
			} else if err != nil {
				return err
			}
		}
		return app.Handle(ctx, ex)
	})})
	l, err := Start(config.Listener{Name: "dapr_grpc", Kind: config.ListenerGRPC, Addresses: []string{"127.0.0.1:0"}}, ref, rt)
	if err != nil {
		t.Fatal(err)
	}
	f.l = l
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	f.cc, err = grpc.NewClient(l.Addrs()[0].String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.cc.Close() })
	return f
}

// errAnswered from a startFixture deny func: the chain answers with what
// deny left in ex.Resp.
var errAnswered = errors.New("answered")

func callCtx(kv ...string) context.Context {
	return metadata.NewOutgoingContext(context.Background(), metadata.Pairs(kv...))
}

// TestFrameProxy: a proxied call of our own app goes through the chain as
// an h2proxy stream and reaches the app with its metadata, the app's token
// instead of the caller's, and its answer's headers.
func TestFrameProxy(t *testing.T) {
	f := startFixture(t, true, nil)
	tc := testgrpc.NewTestServiceClient(f.cc)
	ctx := callCtx("dapr-app-id", "orders", "dapr-api-token", "caller-token", "x-hello", "world", "x-data-bin", "\x00\xff")
	var hdr metadata.MD
	resp, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetPayload().GetBody()) != "ping" {
		t.Fatalf("body %q", resp.GetPayload().GetBody())
	}
	seen := f.last(t)
	if _, ok := seen.native.(*h2proxy.Stream); !ok {
		t.Fatalf("the chain got a %T, want an *h2proxy.Stream", seen.native)
	}
	if seen.key != "/invoke/orders/method/grpc.testing.TestService/UnaryCall" || seen.remote != "127.0.0.1" {
		t.Fatalf("key %q remote %q", seen.key, seen.remote)
	}
	if seen.headers["x-hello"] != "world" || seen.headers["x-data-bin"] != "AP8=" {
		t.Fatalf("headers the chain saw: %v", seen.headers)
	}
	if got := hdr.Get("got-dapr-api-token"); len(got) != 1 || got[0] != "app-token" {
		t.Fatalf("the app got dapr-api-token %v, want only the app token", got)
	}
	if got := hdr.Get("got-x-hello"); len(got) != 1 || got[0] != "world" {
		t.Fatalf("the app got x-hello %v", got)
	}
	if got := hdr.Get("got-x-data-bin"); len(got) != 1 || got[0] != "\x00\xff" {
		t.Fatalf("the app got x-data-bin %q", got)
	}
	if got := hdr.Get("got-" + PeerField); len(got) != 0 {
		t.Fatalf("the app got %s %v", PeerField, got)
	}
}

// TestFrameDeadline: the app gets what is left of the caller's deadline
// after the time the call spent in the sidecar, not the whole of it.
func TestFrameDeadline(t *testing.T) {
	f := startFixture(t, true, func(*filters.Exchange) error {
		time.Sleep(500 * time.Millisecond) // a slow filter
		return nil
	})
	ctx, cancel := context.WithTimeout(callCtx("dapr-app-id", "orders"), 10*time.Second)
	defer cancel()
	var hdr metadata.MD
	if _, err := testgrpc.NewTestServiceClient(f.cc).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	got := hdr.Get("got-deadline-ms")
	if len(got) != 1 {
		t.Fatalf("the app got no deadline: %v", hdr)
	}
	if ms, _ := strconv.Atoi(got[0]); ms > 9600 || ms < 5000 {
		t.Fatalf("the app's deadline was %s ms away, want what is left of 10 s after 0.5 s", got[0])
	}
}

// TestFrameProxyDenied: a chain error becomes the call's status with
// daprd's ErrorInfo.
func TestFrameProxyDenied(t *testing.T) {
	f := startFixture(t, true, func(*filters.Exchange) error {
		return filters.NewError(filters.ErrCodePermissionDenied, 403, codes.PermissionDenied, "access control policy has denied access to method %s", "x")
	})
	tc := testgrpc.NewTestServiceClient(f.cc)
	_, err := tc.UnaryCall(callCtx("dapr-app-id", "orders"), &testgrpc.SimpleRequest{})
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied || st.Message() != "access control policy has denied access to method x" {
		t.Fatalf("got %v", err)
	}
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	if reason != filters.ErrCodePermissionDenied {
		t.Fatalf("details %v", st.Details())
	}
}

// TestFrameSorting: a connection whose first call is the Dapr API goes to
// grpc-go whole, proxied calls on it included; on a connection whose first
// call is proxied, later Dapr API calls go to grpc-go in-process, which sees
// the caller's address and not a forged one.
func TestFrameSorting(t *testing.T) {
	f := startFixture(t, true, func(ex *filters.Exchange) error {
		if string(ex.AppID) == "billing" {
			return filters.NewError(filters.ErrCodeDirectInvoke, 500, codes.Unavailable, "no billing here")
		}
		return nil
	})
	// sawCaller checks the chain's last call: its route key, the caller's
	// own address and no PeerField among its headers.
	sawCaller := func(t *testing.T, key string) seenCall {
		t.Helper()
		seen := f.last(t)
		if seen.key != key || seen.remote != "127.0.0.1" {
			t.Fatalf("key %q remote %q, want %q from the caller's 127.0.0.1", seen.key, seen.remote, key)
		}
		if _, ok := seen.headers[PeerField]; ok {
			t.Fatalf("%s reached the chain", PeerField)
		}
		return seen
	}
	billing := func(t *testing.T, cc *grpc.ClientConn) seenCall {
		t.Helper()
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(callCtx("dapr-app-id", "billing", PeerField, "10.0.0.1"), &testgrpc.SimpleRequest{})
		if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "no billing here" {
			t.Fatalf("got %v", err)
		}
		return sawCaller(t, "/invoke/billing/method/grpc.testing.TestService/UnaryCall")
	}
	invoke := func(t *testing.T, cc *grpc.ClientConn) {
		t.Helper()
		dc := runtimev1pb.NewDaprClient(cc)
		md, err := dc.GetMetadata(context.Background(), &runtimev1pb.GetMetadataRequest{})
		if err != nil || md.GetId() != "orders" {
			t.Fatalf("GetMetadata: %v %v", md, err)
		}
		_, err = dc.InvokeService(callCtx(PeerField, "10.0.0.1"), &runtimev1pb.InvokeServiceRequest{Id: "billing",
			Message: &commonv1pb.InvokeRequest{Method: "pay"}})
		if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "no billing here" {
			t.Fatalf("InvokeService: %v", err)
		}
		sawCaller(t, "/invoke/billing/method/pay")
	}
	dial := func(t *testing.T) *grpc.ClientConn {
		cc, err := grpc.NewClient(f.l.Addrs()[0].String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}

	t.Run("Dapr API first", func(t *testing.T) {
		cc := dial(t)
		invoke(t, cc)
		if seen := billing(t, cc); reflect.TypeOf(seen.native) == reflect.TypeOf(&h2proxy.Stream{}) {
			t.Fatal("a proxied call on a Dapr API connection was a frame call")
		}
	})
	t.Run("proxied call first", func(t *testing.T) {
		cc := dial(t)
		if seen := billing(t, cc); reflect.TypeOf(seen.native) != reflect.TypeOf(&h2proxy.Stream{}) {
			t.Fatalf("the chain got a %T, want an *h2proxy.Stream", seen.native)
		}
		invoke(t, cc)
		// A call without dapr-app-id is grpc-go's answer: unimplemented.
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("got %v", err)
		}
	})
}

// TestGRPCGoMode: with grpc_frame_proxy off, our own app's calls are
// grpc-go's streams as before.
func TestGRPCGoMode(t *testing.T) {
	f := startFixture(t, false, nil)
	var hdr metadata.MD
	_, err := testgrpc.NewTestServiceClient(f.cc).UnaryCall(callCtx("dapr-app-id", "orders", "x-hello", "world"), &testgrpc.SimpleRequest{}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.last(t).native.(grpc.ServerStream); !ok {
		t.Fatalf("got %T", f.last(t).native)
	}
	if got := hdr.Get("got-x-hello"); len(got) != 1 || got[0] != "world" {
		t.Fatalf("the app got x-hello %v", got)
	}
}

// TestFrameGracefulClose: calls in flight when the listener closes finish.
func TestFrameGracefulClose(t *testing.T) {
	f := startFixture(t, true, nil)
	tc := testgrpc.NewTestServiceClient(f.cc)
	if _, err := tc.UnaryCall(callCtx("dapr-app-id", "orders"), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := tc.UnaryCall(callCtx("dapr-app-id", "orders"), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("sleep")}})
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond) // the call is at the app
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("the call in flight failed: %v", err)
	}
	if _, err := net.DialTimeout("tcp", f.l.Addrs()[0].String(), time.Second); err == nil {
		t.Fatal("the port still accepts")
	}
}

func benchmarkProxy(b *testing.B, frameProxy bool) {
	f := startFixture(b, frameProxy, nil)
	tc := testgrpc.NewTestServiceClient(f.cc)
	ctx := callCtx("dapr-app-id", "orders")
	req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 64)}}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tc.UnaryCall(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkProxyFrames is one proxied unary call through the listener, the
// chain and the app cluster to the app, frame mode. The client's and the
// app's grpc-go allocations count too.
func BenchmarkProxyFrames(b *testing.B) { benchmarkProxy(b, true) }

// BenchmarkProxyGRPCGo is the same with grpc_frame_proxy off.
func BenchmarkProxyGRPCGo(b *testing.B) { benchmarkProxy(b, false) }

func benchmarkInvoke(b *testing.B, frameProxy bool) {
	f := startFixture(b, frameProxy, func(ex *filters.Exchange) error {
		ex.Resp.SetBodyString("ok")
		return errAnswered
	})
	dc := runtimev1pb.NewDaprClient(f.cc)
	req := &runtimev1pb.InvokeServiceRequest{Id: "orders", Message: &commonv1pb.InvokeRequest{Method: "m"}}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := dc.InvokeService(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkInvokeServiceFrames is one InvokeService call that the chain
// answers, in frame mode: the call crosses the frame server to the grpc-go
// server in-process.
func BenchmarkInvokeServiceFrames(b *testing.B) { benchmarkInvoke(b, true) }

// BenchmarkInvokeServiceGRPCGo is the same with grpc-go on the port.
func BenchmarkInvokeServiceGRPCGo(b *testing.B) { benchmarkInvoke(b, false) }
