package h2proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// app is a gRPC server of the interop TestService.
type app struct {
	testgrpc.UnimplementedTestServiceServer
	sleep chan struct{} // UnaryCall with payload "sleep" waits for it or the deadline
	seen  chan error    // the context error a sleeping call ended with
	// duplexEnd gets how each FullDuplexCall ended (nil: the client closed).
	duplexEnd chan error
	// outEnd gets the error a StreamingOutputCall failed to send with.
	outEnd chan error
}

func (a *app) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo", first(md["x-test"])))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t1", "x-bin-bin", "\x00\x01"))
	if string(in.GetPayload().GetBody()) == "sleep" {
		select {
		case <-a.sleep:
		case <-ctx.Done():
			a.seen <- ctx.Err()
			return nil, ctx.Err()
		}
	}
	if s := in.GetResponseStatus(); s != nil && s.GetCode() != 0 {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testgrpc.SimpleResponse{Payload: in.GetPayload()}, nil
}

func (a *app) StreamingOutputCall(in *testgrpc.StreamingOutputCallRequest, ss testgrpc.TestService_StreamingOutputCallServer) error {
	for _, p := range in.GetResponseParameters() {
		body := bytes.Repeat([]byte{'x'}, int(p.GetSize()))
		if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			select {
			case a.outEnd <- err:
			default:
			}
			return err
		}
	}
	return nil
}

func (a *app) StreamingInputCall(ss testgrpc.TestService_StreamingInputCallServer) error {
	total := 0
	for {
		m, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return ss.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (a *app) FullDuplexCall(ss testgrpc.TestService_FullDuplexCallServer) error {
	for {
		m, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			select {
			case a.duplexEnd <- err:
			default:
			}
			return err
		}
		if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// env is the app, a proxy that bridges every call to it, and a client of
// the proxy.
type env struct {
	c         testgrpc.TestServiceClient
	a         *app
	appAddr   string
	proxyAddr string
	srv       *grpc.Server
	t         *testing.T
}

// startApp (re)starts the app's server on e.appAddr (a free port the
// first time).
func (e *env) startApp() {
	e.t.Helper()
	addr := e.appAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.appAddr = ln.Addr().String()
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	testgrpc.RegisterTestServiceServer(srv, e.a)
	go func() { _ = srv.Serve(ln) }()
	e.srv = srv
	e.t.Cleanup(srv.Stop)
}

// setup starts the app and a proxy that bridges every call to it (or runs
// onStream's handler).
func setup(t *testing.T, onStream func(*Pool) func(*Stream)) *env {
	t.Helper()
	e := &env{t: t, a: &app{sleep: make(chan struct{}), seen: make(chan error, 1), duplexEnd: make(chan error, 1), outEnd: make(chan error, 1)}}
	e.startApp()
	pool := NewPool(e.appAddr, nil)
	t.Cleanup(pool.Close)
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.proxyAddr = pln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); _ = pln.Close(); wg.Wait() })
	handler := bridgeAll(pool)
	if onStream != nil {
		handler = onStream(pool)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := pln.Accept()
			if err != nil {
				return
			}
			c := NewServerConn(ctx, nc, handler)
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Serve() }()
			go func() { <-ctx.Done(); c.Close() }()
		}
	}()
	e.c = client(t, e.proxyAddr)
	return e
}

func client(t *testing.T, addr string) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

func bridgeAll(pool *Pool) func(*Stream) {
	return func(st *Stream) {
		fields := make([]hpack.HeaderField, 0, len(st.Fields()))
		for _, f := range st.Fields() {
			if f.Name == ":authority" {
				f.Value = pool.Addr()
			}
			fields = append(fields, f)
		}
		if err := st.Bridge(st.Context(), pool, fields); err != nil && !st.Answered() {
			s := status.Convert(err)
			st.Fail(s.Code(), s.Message(), nil)
		}
	}
}

func TestUnary(t *testing.T) {
	c := setup(t, nil).c
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-test", "v1")
	var hdr, trl metadata.MD
	for i := 0; i < 50; i++ {
		body := bytes.Repeat([]byte{byte(i)}, i*100)
		resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}},
			grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), body) {
			t.Fatalf("call %d: body of %d bytes came back as %d", i, len(body), len(resp.GetPayload().GetBody()))
		}
	}
	if first(hdr["x-echo"]) != "v1" || first(trl["x-trailer"]) != "t1" || first(trl["x-bin-bin"]) != "\x00\x01" {
		t.Fatalf("headers %v trailers %v", hdr, trl)
	}
}

func TestStatusAndDetails(t *testing.T) {
	c := setup(t, nil).c
	_, err := c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{
		ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing: 100% ünïcode"}})
	if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such thing: 100% ünïcode" {
		t.Fatalf("got %v", err)
	}
}

// TestLargeMessages sends and receives messages far over every window, so
// that flow control has to queue and release on both connections.
func TestLargeMessages(t *testing.T) {
	c := setup(t, nil).c
	body := bytes.Repeat([]byte("0123456789"), 700_000) // 7 MB
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}})
			if err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(resp.GetPayload().GetBody(), body) {
				t.Error("the large body came back changed")
			}
		}()
	}
	wg.Wait()
}

func TestStreams(t *testing.T) {
	c := setup(t, nil).c
	ctx := context.Background()

	out, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{
		{Size: 10}, {Size: 3 << 20}, {Size: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for {
		m, err := out.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(m.GetPayload().GetBody()))
	}
	if len(sizes) != 3 || sizes[0] != 10 || sizes[1] != 3<<20 || sizes[2] != 1 {
		t.Fatalf("server stream sizes %v", sizes)
	}

	in, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := in.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 50_000)}}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := in.CloseAndRecv()
	if err != nil || sum.GetAggregatedPayloadSize() != 5_000_000 {
		t.Fatalf("client stream: %v %v", sum, err)
	}

	bidi, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		msg := bytes.Repeat([]byte{byte(i)}, i*1000)
		if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: msg}}); err != nil {
			t.Fatal(err)
		}
		m, err := bidi.Recv()
		if err != nil || !bytes.Equal(m.GetPayload().GetBody(), msg) {
			t.Fatalf("bidi message %d: %v", i, err)
		}
	}
	if err := bidi.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bidi.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: %v", err)
	}
}

// TestDeadlineAndCancel: the caller's deadline reaches the app
// (grpc-timeout crosses), and a cancelled call is cancelled at the app.
func TestDeadlineAndCancel(t *testing.T) {
	e := setup(t, nil)
	c, a := e.c, e.a
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("sleep")}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	select {
	case e := <-a.seen:
		if !errors.Is(e, context.DeadlineExceeded) && !errors.Is(e, context.Canceled) {
			t.Fatalf("app saw %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the app's call did not end")
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel2() }()
	_, err = c.UnaryCall(ctx2, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("sleep")}})
	if status.Code(err) != codes.Canceled {
		t.Fatalf("got %v", err)
	}
	select {
	case e := <-a.seen:
		if !errors.Is(e, context.Canceled) {
			t.Fatalf("app saw %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancel did not reach the app")
	}
}

// TestFailBeforeBridge: a handler that refuses a call answers with a
// status and its details.
func TestFailBeforeBridge(t *testing.T) {
	c := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) {
			st.Fail(codes.PermissionDenied, "denied: "+st.FullMethod()+" for "+st.Header("x-who"), nil)
		}
	}).c
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-who", "me")
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 100)}})
	s := status.Convert(err)
	if s.Code() != codes.PermissionDenied || s.Message() != "denied: /grpc.testing.TestService/UnaryCall for me" {
		t.Fatalf("got %v", err)
	}
}

// TestAppRestart: with the app gone, calls fail at once as Unavailable;
// once it is back on its address, calls work again on a new connection.
func TestAppRestart(t *testing.T) {
	e := setup(t, nil)
	if _, err := e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	e.srv.Stop()
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		// The first call may meet the old connection as it closes.
		if _, err = e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); status.Code(err) == codes.Unavailable {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "connection") {
		t.Fatalf("with the app down: %v", err)
	}
	e.startApp()
	resp, err := e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("back")}})
	if err != nil || string(resp.GetPayload().GetBody()) != "back" {
		t.Fatalf("after the restart: %v %v", resp, err)
	}
}

// TestAppDiesMidCall: a call in flight when the app's connection breaks
// ends with Unavailable, and does not hang.
func TestAppDiesMidCall(t *testing.T) {
	e := setup(t, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("sleep")}})
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	e.srv.Stop()
	select {
	case err := <-errc:
		if code := status.Code(err); code != codes.Unavailable && code != codes.Canceled && code != codes.Internal {
			t.Fatalf("got %v", err)
		}
		if err == nil {
			t.Fatal("the call succeeded with the app gone")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call hangs")
	}
}

// TestBadInput: a connection that does not speak HTTP/2, or breaks the
// protocol after the preface, is closed; the proxy keeps serving.
func TestBadInput(t *testing.T) {
	e := setup(t, nil)
	for _, junk := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		http2.ClientPreface + "\x00\x00\x04\x09\x00\x00\x00\x00\x01abcd",  // CONTINUATION out of the blue
		http2.ClientPreface + "\x00\x00\x05\x00\x00\x00\x00\x00\x02hello", // DATA on an idle stream
		http2.ClientPreface + "\xff\xff\xff\x01\x05\x00\x00\x00\x01",      // HEADERS larger than the frame limit
	} {
		nc, err := net.Dial("tcp", e.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write([]byte(junk))
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, nc)
		_ = nc.Close()
		if err != nil {
			t.Fatalf("%q: the connection was not closed: %v", junk, err)
		}
	}
	if _, err := e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("after bad input: %v", err)
	}
}

// TestConcurrent: many calls on several connections at once, each with a
// body of its own size, all come back whole.
func TestConcurrent(t *testing.T) {
	e := setup(t, nil)
	clients := []testgrpc.TestServiceClient{e.c, client(t, e.proxyAddr), client(t, e.proxyAddr)}
	var wg sync.WaitGroup
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i%len(clients)]
			for j := 0; j < 20; j++ {
				body := bytes.Repeat([]byte{byte(i), byte(j)}, (i*j*97)%40000)
				resp, err := c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}})
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), body) {
					t.Errorf("call %d/%d: the body came back changed", i, j)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestCancelStream: a client that cancels a bidirectional stream midway
// has the app's stream cancelled too.
func TestCancelStream(t *testing.T) {
	e := setup(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := e.c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-e.a.duplexEnd:
		if status.Code(err) != codes.Canceled {
			t.Fatalf("the app's stream ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the app's stream was not cancelled")
	}
}

// slowStartApp is a raw HTTP/2 server that grants no stream window at
// first (SETTINGS_INITIAL_WINDOW_SIZE 0) and opens it with a second
// SETTINGS once the call's headers arrived, as grpc-go's window estimation
// does. It counts the request's bytes and answers with their number in a
// trailer.
func slowStartApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		fr := serverFramer(nc)
		if fr == nil {
			return
		}
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		_ = fr.WriteWindowUpdate(0, 1<<30)
		total := 0
		eachFrame(fr, func(f http2.Frame) {
			switch f := f.(type) {
			case *http2.HeadersFrame:
				_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			case *http2.DataFrame:
				total += len(f.Data())
				if n := f.Header().Length; n > 0 {
					_ = fr.WriteWindowUpdate(f.StreamID, n)
				}
				if f.StreamEnded() {
					var hb bytes.Buffer
					enc := hpack.NewEncoder(&hb)
					_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
					_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
					_ = enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
					_ = enc.WriteField(hpack.HeaderField{Name: "x-total", Value: fmt.Sprint(total)})
					_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
				}
			}
		})
	}()
	return ln.Addr().String()
}

// TestWindowFromSettings: data queued for lack of window and sent when a
// SETTINGS frame opens the window is credited back to the caller; without
// that a caller sending more than its window would wait forever.
func TestWindowFromSettings(t *testing.T) {
	appAddr := slowStartApp(t)
	pool := NewPool(appAddr, nil)
	t.Cleanup(pool.Close)
	bridge := bridgeAll(pool)
	e := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) {
			// The caller fills its window before the call is bridged.
			time.Sleep(300 * time.Millisecond)
			bridge(st)
		}
	})
	cc, err := grpc.NewClient(e.proxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/x.Y/Z")
	if err != nil {
		t.Fatal(err)
	}
	msg := &testgrpc.Payload{Body: make([]byte, 100_000)}
	for i := 0; i < 40; i++ { // 4 MB, four times the caller's window
		if err := cs.SendMsg(msg); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	_ = cs.CloseSend()
	if err := cs.RecvMsg(msg); !errors.Is(err, io.EOF) {
		t.Fatalf("got %v", err)
	}
	if got := cs.Trailer().Get("x-total"); len(got) != 1 || got[0] == "0" {
		t.Fatalf("trailer %v", cs.Trailer())
	}
}

func TestTimeoutCoding(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, 99999999, 100000000, 1500 * time.Millisecond, 3 * time.Hour, 2000000 * time.Hour} {
		v := EncodeTimeout(d)
		got, ok := Timeout(v)
		if !ok || len(v) > 9 || got < d {
			t.Fatalf("%v -> %q -> %v %v", d, v, got, ok)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, ok := RemainingTimeout(ctx)
	if d, _ := Timeout(v); !ok || d > 2*time.Second || d < time.Second {
		t.Fatalf("remaining %q", v)
	}
}

// TestStreamLimit: an app that takes two calls at a time per connection
// (SETTINGS_MAX_CONCURRENT_STREAMS 2) gets ten at once on more
// connections, and none is refused.
func TestStreamLimit(t *testing.T) {
	a := &app{sleep: make(chan struct{}), seen: make(chan error, 16)}
	srv := grpc.NewServer(grpc.MaxConcurrentStreams(2))
	testgrpc.RegisterTestServiceServer(srv, a)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	pool := NewPool(ln.Addr().String(), nil)
	t.Cleanup(pool.Close)
	var failed atomic.Int32
	bridge := bridgeAll(pool)
	e := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) {
			bridge(st)
			if st.Err() != nil {
				failed.Add(1)
			}
		}
	})
	// Warm up: the pool learns the limit from the app's SETTINGS.
	if _, err := e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			// Each call holds its stream until its deadline.
			_, _ = e.c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("sleep")}})
		}()
	}
	wg.Wait()
	// Every call that reached the app ends there with its deadline.
	timeout := time.After(5 * time.Second)
	for i := 0; i < 10; i++ {
		select {
		case <-a.seen:
		case <-timeout:
			t.Fatalf("the app saw %d of the 10 calls (%d refused at the proxy)", i, failed.Load())
		}
	}
	if n := pool.Conns(); n < 5 {
		t.Fatalf("%d connections for 10 calls at 2 a connection", n)
	}
}

// TestIdleConnClosed: an app connection with a call open stays through
// idle checks; once it carries no call it is closed, and the next call
// dials a new connection.
func TestIdleConnClosed(t *testing.T) {
	defer func(d time.Duration) { idleCheck = d }(idleCheck)
	idleCheck = 50 * time.Millisecond
	var pool *Pool
	e := setup(t, func(p *Pool) func(*Stream) { pool = p; return bridgeAll(p) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := e.c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * idleCheck)
	if err := ds.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 3}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Recv(); err != nil {
		t.Fatalf("a call open through idle checks: %v", err)
	}
	_ = ds.CloseSend()
	if _, err := ds.Recv(); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for pool.Conns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle app connection is still open")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The pool had no connection left: the call dials a new one.
	if _, err := e.c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("a call after the idle connection closed: %v", err)
	}
}
