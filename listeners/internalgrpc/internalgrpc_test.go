package internalgrpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	internalv1pb "github.com/dapr/dapr/pkg/proto/internals/v1"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// seen is what the chain saw of one exchange, copied out of it.
type seen struct {
	protocol   filters.Protocol
	listener   string
	key        string
	method     string
	query      string
	ctype      string
	body       string
	headers    map[string][]string
	caller     string
	callerNS   string
	remote     string
	fullMethod string
}

func record(ex *filters.Exchange) seen {
	s := seen{protocol: ex.Protocol, listener: ex.Listener, key: string(ex.Key), method: string(ex.Req.Header.Method()),
		query: string(ex.Req.URI().QueryString()), ctype: string(ex.Req.Header.ContentType()), body: string(ex.Req.Body()),
		headers: map[string][]string{}, caller: string(ex.CallerAppID), callerNS: string(ex.CallerNamespace), remote: string(ex.RemoteAddr)}
	for k, v := range ex.Req.Header.All() {
		lk := strings.ToLower(string(k))
		s.headers[lk] = append(s.headers[lk], string(v))
	}
	if ex.Stream != nil {
		s.fullMethod = ex.Stream.FullMethod()
	}
	return s
}

type server struct {
	l    *Listener
	ref  *listeners.ChainRef
	conn *grpc.ClientConn
	cli  internalv1pb.ServiceInvocationClient
	seen chan seen
}

func chainOf(h filters.HandlerFunc) *filters.Chain { return &filters.Chain{Handler: h} }

// startServer starts the internal listener for app id "orders" with a
// chain that records each exchange and then runs h.
func startServer(t testing.TB, maxMB int, h filters.HandlerFunc) *server {
	t.Helper()
	return startServerCfg(t, &config.Config{AppID: "orders", DaprHTTPMaxRequestSize: maxMB}, h)
}

// startServerCfg is startServer with the whole configuration given.
func startServerCfg(t testing.TB, cfg *config.Config, h filters.HandlerFunc) *server {
	t.Helper()
	rt := runtimeOf(t, cfg)
	if h == nil {
		h = func(_ context.Context, ex *filters.Exchange) error { return answer(ex) }
	}
	s := &server{ref: &listeners.ChainRef{}, seen: make(chan seen, 64)}
	s.ref.Store(chainOf(func(ctx context.Context, ex *filters.Exchange) error {
		select {
		case s.seen <- record(ex):
		default:
		}
		return h(ctx, ex)
	}))
	l, err := Start(config.Listener{Name: "dapr_internal", Kind: config.ListenerInternal, Addresses: []string{"127.0.0.1:0"}}, s.ref, rt)
	if err != nil {
		t.Fatal(err)
	}
	s.l = l
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	s.conn, err = grpc.NewClient(l.Addrs()[0].String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	s.cli = internalv1pb.NewServiceInvocationClient(s.conn)
	return s
}

// runtimeOf is a listener runtime whose snapshot holds cfg.
func runtimeOf(t testing.TB, cfg *config.Config) *listeners.Runtime {
	t.Helper()
	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: stats.NewRegistry("dapr_")}
	m := listeners.NewManager(rt, 0)
	if err := m.Apply(context.Background(), config.NewSnapshot(cfg, "test")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return rt
}

func (s *server) last(t *testing.T) seen {
	t.Helper()
	select {
	case v := <-s.seen:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("the chain never ran")
		return seen{}
	}
}

func ctx10(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func lists(kv map[string][]string) map[string]*internalv1pb.ListStringValue {
	m := map[string]*internalv1pb.ListStringValue{}
	for k, v := range kv {
		m[k] = &internalv1pb.ListStringValue{Values: v}
	}
	return m
}

func values(m map[string]*internalv1pb.ListStringValue) map[string][]string {
	out := map[string][]string{}
	for k, l := range m {
		out[k] = l.GetValues()
	}
	return out
}

// answer fills the response the app would give.
func answer(ex *filters.Exchange) error {
	ex.Resp.SetStatusCode(201)
	ex.Resp.Header.SetContentType("text/plain")
	ex.Resp.Header.Set("X-Resp", "r")
	ex.Resp.SetBodyString("created:" + string(ex.Req.Body()))
	ex.SetValue(grpcwire.TrailerKey, metadata.MD{"x-trailer": {"t"}, "t-bin": {"\x00\x01"}})
	return nil
}

func invokeRequest() *internalv1pb.InternalInvokeRequest {
	return &internalv1pb.InternalInvokeRequest{
		Ver: internalv1pb.APIVersion_V1,
		Message: &commonv1pb.InvokeRequest{Method: "orders/new", ContentType: "application/json",
			Data:          &anypb.Any{Value: []byte(`{"id":1}`)},
			HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_PUT, Querystring: "a=1&b=2"}},
		Metadata: lists(map[string][]string{
			"dapr-caller-app-id":    {"checkout"},
			"dapr-caller-namespace": {"prod"},
			"x-custom":              {"a", "b"},
			"grpc-trace-bin":        {"AAEC"},
			"grpc-timeout":          {"1S"},
			":authority":            {"orders"},
			"content-type":          {"application/grpc"},
			"auth-bin":              {b64("\xff")},
		}),
	}
}

// checkDecoded checks what the chain saw of invokeRequest().
func checkDecoded(t *testing.T, s seen, body string) {
	t.Helper()
	if s.protocol != filters.ProtocolInternal || s.listener != "dapr_internal" || s.key != "/invoke/orders/method/orders/new" ||
		s.method != "PUT" || s.query != "a=1&b=2" || s.ctype != "application/json" || s.body != body {
		t.Fatalf("decoded %+v", s)
	}
	if s.caller != "checkout" || s.callerNS != "prod" || s.remote != "127.0.0.1" {
		t.Fatalf("caller %q ns %q remote %q", s.caller, s.callerNS, s.remote)
	}
	got := s.headers["x-custom"]
	sort.Strings(got)
	if !reflect.DeepEqual(got, []string{"a", "b"}) || s.headers["grpc-trace-bin"][0] != "AAEC" || s.headers["dapr-grpc-timeout"][0] != "1S" ||
		s.headers["dapr-authority"][0] != "orders" {
		t.Fatalf("headers %v", s.headers)
	}
	for _, k := range []string{"auth-bin", "grpc-timeout", ":authority"} {
		if _, ok := s.headers[k]; ok {
			t.Fatalf("header %s must be left out: %v", k, s.headers)
		}
	}
}

func daprError(t *testing.T, err error) (codes.Code, string, string) {
	t.Helper()
	st := status.Convert(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == grpcwire.Domain {
			return st.Code(), info.GetReason(), info.GetMetadata()[grpcwire.MetaHTTPCode]
		}
	}
	return st.Code(), "", ""
}

func TestCallLocal(t *testing.T) {
	s := startServer(t, 0, func(_ context.Context, ex *filters.Exchange) error { return answer(ex) })
	resp, err := s.cli.CallLocal(ctx10(t), invokeRequest())
	if err != nil {
		t.Fatal(err)
	}
	checkDecoded(t, s.last(t), `{"id":1}`)
	if resp.GetStatus().GetCode() != 201 || resp.GetMessage().GetContentType() != "text/plain" ||
		string(resp.GetMessage().GetData().GetValue()) != `created:{"id":1}` {
		t.Fatalf("response %v", resp)
	}
	hs := values(resp.GetHeaders())
	if !reflect.DeepEqual(hs["x-resp"], []string{"r"}) {
		t.Fatalf("headers %v", hs)
	}
	for _, k := range []string{"content-type", "content-length"} {
		if _, ok := hs[k]; ok {
			t.Fatalf("header %s travels in the message, not the headers: %v", k, hs)
		}
	}
	tr := values(resp.GetTrailers())
	if !reflect.DeepEqual(tr, map[string][]string{"x-trailer": {"t"}, "t-bin": {b64("\x00\x01")}}) {
		t.Fatalf("trailers %v", tr)
	}
}

func TestCallLocalErrors(t *testing.T) {
	var mode atomic.Value
	s := startServer(t, 1, func(_ context.Context, ex *filters.Exchange) error {
		switch mode.Load() {
		case "denied":
			return filters.NewError(filters.ErrCodePermissionDenied, http.StatusForbidden, codes.PermissionDenied, "access denied by policy")
		case "plain":
			return errors.New("upstream exploded")
		case "wrapped":
			return fmt.Errorf("router: %w", filters.NewError(filters.ErrCodeNotFound, 404, codes.NotFound, "no route"))
		}
		return answer(ex)
	})
	cases := []struct {
		name   string
		mode   string
		req    *internalv1pb.InternalInvokeRequest
		code   codes.Code
		reason string
		http   string
	}{
		{"no message", "", &internalv1pb.InternalInvokeRequest{Ver: internalv1pb.APIVersion_V1}, codes.InvalidArgument, "", ""},
		{"Dapr error from the chain", "denied", invokeRequest(), codes.PermissionDenied, filters.ErrCodePermissionDenied, "403"},
		{"wrapped Dapr error", "wrapped", invokeRequest(), codes.NotFound, filters.ErrCodeNotFound, "404"},
		{"plain error from the chain", "plain", invokeRequest(), codes.Internal, filters.ErrCodeDirectInvoke, "500"},
		{"message over the size limit", "", &internalv1pb.InternalInvokeRequest{Message: &commonv1pb.InvokeRequest{Method: "m",
			Data: &anypb.Any{Value: bytes.Repeat([]byte("x"), 2<<20)}}}, codes.ResourceExhausted, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mode.Store(tc.mode)
			_, err := s.cli.CallLocal(ctx10(t), tc.req)
			code, reason, hc := daprError(t, err)
			if code != tc.code || reason != tc.reason || hc != tc.http {
				t.Fatalf("error %v: code %v reason %q http %q, want %v %q %q", err, code, reason, hc, tc.code, tc.reason, tc.http)
			}
		})
	}
	t.Run("no HTTP extension is POST with no query", func(t *testing.T) {
		mode.Store("")
		for len(s.seen) > 0 {
			<-s.seen
		}
		resp, err := s.cli.CallLocal(ctx10(t), &internalv1pb.InternalInvokeRequest{Message: &commonv1pb.InvokeRequest{Method: "ping"}})
		if err != nil {
			t.Fatal(err)
		}
		got := s.last(t)
		if got.method != "POST" || got.query != "" || got.body != "" || got.key != "/invoke/orders/method/ping" || got.caller != "" {
			t.Fatalf("decoded %+v", got)
		}
		if string(resp.GetMessage().GetData().GetValue()) != "created:" {
			t.Fatalf("response %v", resp)
		}
	})
}

// sendStream sends msgs on a CallLocalStream and reads the whole answer.
func sendStream(t *testing.T, s *server, msgs ...*internalv1pb.InternalInvokeRequestStream) ([]*internalv1pb.InternalInvokeResponseStream, error) {
	t.Helper()
	st, err := s.cli.CallLocalStream(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			break // the server answered early; Recv has its status
		}
	}
	_ = st.CloseSend()
	var out []*internalv1pb.InternalInvokeResponseStream
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func payload(data string, seq uint64) *commonv1pb.StreamPayload {
	return &commonv1pb.StreamPayload{Data: []byte(data), Seq: seq}
}

func TestCallLocalStream(t *testing.T) {
	var respBody atomic.Value
	respBody.Store([]byte(nil))
	s := startServer(t, 0, func(_ context.Context, ex *filters.Exchange) error {
		if err := answer(ex); err != nil {
			return err
		}
		if b := respBody.Load().([]byte); b != nil {
			ex.Resp.SetBody(b)
		}
		return nil
	})

	t.Run("request in chunks", func(t *testing.T) {
		req := invokeRequest()
		req.Message.Data = nil
		out, err := sendStream(t, s,
			&internalv1pb.InternalInvokeRequestStream{Request: req, Payload: payload("abc", 0)},
			&internalv1pb.InternalInvokeRequestStream{Payload: payload("def", 1)},
			&internalv1pb.InternalInvokeRequestStream{Payload: payload("ghi", 2)})
		if err != nil {
			t.Fatal(err)
		}
		checkDecoded(t, s.last(t), "abcdefghi")
		if len(out) != 1 || out[0].GetResponse().GetStatus().GetCode() != 201 || string(out[0].GetPayload().GetData()) != "created:abcdefghi" {
			t.Fatalf("answer %v", out)
		}
		if tr := values(out[0].GetResponse().GetTrailers()); tr["x-trailer"][0] != "t" {
			t.Fatalf("trailers %v", tr)
		}
	})

	t.Run("the request's data comes before the chunks", func(t *testing.T) {
		_, err := sendStream(t, s,
			&internalv1pb.InternalInvokeRequestStream{Request: invokeRequest(), Payload: payload("-def", 0)},
			&internalv1pb.InternalInvokeRequestStream{Payload: payload("-ghi", 1)})
		if err != nil {
			t.Fatal(err)
		}
		checkDecoded(t, s.last(t), `{"id":1}-def-ghi`)
	})

	t.Run("large answer in 1 MiB chunks", func(t *testing.T) {
		big := make([]byte, chunkSize*5/2)
		for i := range big {
			big[i] = byte(i % 251)
		}
		respBody.Store(big)
		defer respBody.Store([]byte(nil))
		out, err := sendStream(t, s, &internalv1pb.InternalInvokeRequestStream{Request: invokeRequest()})
		if err != nil {
			t.Fatal(err)
		}
		<-s.seen
		if len(out) != 3 {
			t.Fatalf("%d chunks, want 3", len(out))
		}
		var got []byte
		for i, m := range out {
			if m.GetPayload().GetSeq() != uint64(i) || len(m.GetPayload().GetData()) > chunkSize {
				t.Fatalf("chunk %d: seq %d, %d bytes", i, m.GetPayload().GetSeq(), len(m.GetPayload().GetData()))
			}
			if (i == 0) != (m.GetResponse() != nil) {
				t.Fatalf("chunk %d: response %v (only the first carries it)", i, m.GetResponse())
			}
			got = append(got, m.GetPayload().GetData()...)
		}
		if !bytes.Equal(got, big) {
			t.Fatal("the chunks do not add up to the body")
		}
		if out[0].GetResponse().GetStatus().GetCode() != 201 || values(out[0].GetResponse().GetHeaders())["x-resp"][0] != "r" {
			t.Fatalf("response %v", out[0].GetResponse())
		}
	})

	t.Run("empty answer", func(t *testing.T) {
		respBody.Store([]byte{})
		defer respBody.Store([]byte(nil))
		out, err := sendStream(t, s, &internalv1pb.InternalInvokeRequestStream{Request: invokeRequest()})
		if err != nil {
			t.Fatal(err)
		}
		<-s.seen
		if len(out) != 1 || out[0].GetResponse() == nil || len(out[0].GetPayload().GetData()) != 0 {
			t.Fatalf("answer %v", out)
		}
	})
}

func TestCallLocalStreamErrors(t *testing.T) {
	s := startServer(t, 0, func(_ context.Context, ex *filters.Exchange) error {
		if string(ex.Method) == "deny" {
			return filters.NewError(filters.ErrCodePermissionDenied, http.StatusForbidden, codes.PermissionDenied, "denied")
		}
		return answer(ex)
	})
	deny := &internalv1pb.InternalInvokeRequest{Message: &commonv1pb.InvokeRequest{Method: "deny"}}
	cases := []struct {
		name   string
		msgs   []*internalv1pb.InternalInvokeRequestStream
		code   codes.Code
		reason string
	}{
		{"first message without a request", []*internalv1pb.InternalInvokeRequestStream{{Payload: payload("x", 0)}}, codes.InvalidArgument, ""},
		{"first request without a message", []*internalv1pb.InternalInvokeRequestStream{{Request: &internalv1pb.InternalInvokeRequest{}}}, codes.InvalidArgument, ""},
		{"later message without a payload", []*internalv1pb.InternalInvokeRequestStream{{Request: invokeRequest()}, {Request: invokeRequest()}}, codes.InvalidArgument, ""},
		{"error from the chain", []*internalv1pb.InternalInvokeRequestStream{{Request: deny}}, codes.PermissionDenied, filters.ErrCodePermissionDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := sendStream(t, s, tc.msgs...)
			code, reason, _ := daprError(t, err)
			if err == nil || code != tc.code || reason != tc.reason || len(out) != 0 {
				t.Fatalf("answer %v, error %v (code %v reason %q), want %v %q", out, err, code, reason, tc.code, tc.reason)
			}
		})
	}
	t.Run("no message at all", func(t *testing.T) {
		_, err := sendStream(t, s)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("an empty stream: %v, want InvalidArgument", err)
		}
	})
}

// TestProxy: a method that is not ServiceInvocation's is a proxied stream
// for our own app: the chain gets the stream, and what it sends reaches
// the caller. This is grpc-go's stream (grpc_frame_proxy off); frame mode
// is TestProxyFrames.
func TestProxy(t *testing.T) {
	off := false
	s := startServerCfg(t, &config.Config{AppID: "orders", GRPCFrameProxy: &off}, func(_ context.Context, ex *filters.Exchange) error {
		if string(ex.Method) == "my.pkg.Greeter/Deny" {
			return filters.NewError(filters.ErrCodePermissionDenied, http.StatusForbidden, codes.PermissionDenied, "denied")
		}
		return echo(ex.Stream.Native().(grpc.ServerStream), metadata.Pairs("x-app", "1"))
	})
	ctx := metadata.AppendToOutgoingContext(ctx10(t), "dapr-caller-app-id", "checkout", "x-custom", "c", "trace-bin", "\x00\x01")
	cs, err := s.conn.NewStream(ctx, grpcwire.StreamDesc, "/my.pkg.Greeter/Chat")
	if err != nil {
		t.Fatal(err)
	}
	chat(t, cs)
	if h, _ := cs.Header(); len(h.Get("x-app")) != 1 {
		t.Fatalf("header %v", h)
	}
	got := s.last(t)
	if got.fullMethod != "/my.pkg.Greeter/Chat" || got.key != "/invoke/orders/method/my.pkg.Greeter/Chat" || got.method != "POST" ||
		got.caller != "checkout" || got.protocol != filters.ProtocolInternal || got.remote != "127.0.0.1" || got.body != "" {
		t.Fatalf("decoded %+v", got)
	}
	if got.headers["x-custom"][0] != "c" || got.headers["trace-bin"][0] != b64("\x00\x01") {
		t.Fatalf("headers %v", got.headers)
	}
	if _, ok := got.headers["content-type"]; ok {
		t.Fatalf("gRPC content-type became a header: %v", got.headers)
	}

	t.Run("an error from the chain is the call's status", func(t *testing.T) {
		cs, err := s.conn.NewStream(ctx10(t), grpcwire.StreamDesc, "/my.pkg.Greeter/Deny")
		if err != nil {
			t.Fatal(err)
		}
		_ = cs.CloseSend()
		err = cs.RecvMsg(new(commonv1pb.StreamPayload))
		if code, reason, hc := daprError(t, err); code != codes.PermissionDenied || reason != filters.ErrCodePermissionDenied || hc != "403" {
			t.Fatalf("err %v", err)
		}
	})
}

// TestChainSwap: each call loads the chain once; a call in flight finishes
// on the chain it started with while later calls get the new one.
func TestChainSwap(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := startServer(t, 0, nil)
	version := func(v string, hold bool) *filters.Chain {
		return chainOf(func(_ context.Context, ex *filters.Exchange) error {
			if hold && string(ex.Method) == "hold" {
				close(entered)
				<-release
			}
			ex.Resp.SetBodyString(v)
			return nil
		})
	}
	s.ref.Store(version("v1", true))
	held := make(chan string, 1)
	go func() {
		resp, err := s.cli.CallLocal(ctx10(t), &internalv1pb.InternalInvokeRequest{Message: &commonv1pb.InvokeRequest{Method: "hold"}})
		held <- fmt.Sprint(string(resp.GetMessage().GetData().GetValue()), err)
	}()
	<-entered
	s.ref.Store(version("v2", false))
	resp, err := s.cli.CallLocal(ctx10(t), &internalv1pb.InternalInvokeRequest{Message: &commonv1pb.InvokeRequest{Method: "m"}})
	if err != nil || string(resp.GetMessage().GetData().GetValue()) != "v2" {
		t.Fatalf("after the swap: %v %v", resp, err)
	}
	close(release)
	if got := <-held; got != "v1<nil>" {
		t.Fatalf("the call in flight got %q, want v1 from the chain it started on", got)
	}

	// Under load: calls racing with swaps all succeed.
	s.ref.Store(version("load-0", false))
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := s.cli.CallLocal(ctx10(t), &internalv1pb.InternalInvokeRequest{Message: &commonv1pb.InvokeRequest{Method: "m"}})
				if err != nil || !strings.HasPrefix(string(resp.GetMessage().GetData().GetValue()), "load-") {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(resp, err))
				}
				calls.Add(1)
			}
		}()
	}
	for i := 1; i <= 50; i++ {
		s.ref.Store(version(fmt.Sprintf("load-%d", i), false))
		before := calls.Load()
		eventually(t, "calls to make progress", func() bool { return calls.Load() >= before+3 })
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed while chains were swapped; first: %v", failed.Load(), calls.Load(), firstErr.Load())
	}
}

// TestClose: Close stops accepting calls, lets the ones in flight finish,
// and gives up on them when its context ends.
func TestClose(t *testing.T) {
	t.Run("graceful", func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		s := startServer(t, 0, func(_ context.Context, ex *filters.Exchange) error {
			if string(ex.Method) == "slow" {
				close(entered)
				<-release
			}
			ex.Resp.SetBodyString("done")
			return nil
		})
		addr := s.l.Addrs()[0].String()
		got := make(chan error, 1)
		go func() {
			resp, err := s.cli.CallLocal(ctx10(t), &internalv1pb.InternalInvokeRequest{Message: &commonv1pb.InvokeRequest{Method: "slow"}})
			if err == nil && string(resp.GetMessage().GetData().GetValue()) != "done" {
				err = fmt.Errorf("answer %v", resp)
			}
			got <- err
		}()
		<-entered
		closed := make(chan error, 1)
		go func() { closed <- s.l.Close(context.Background()) }()
		eventually(t, "the listener to stop accepting", func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return true
			}
			c.Close()
			return false
		})
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) with a call in flight", err)
		default:
		}
		close(release)
		if err := <-got; err != nil {
			t.Fatalf("the call in flight failed: %v", err)
		}
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return")
		}
		// A new connection cannot be made any more.
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := internalv1pb.NewServiceInvocationClient(conn).CallLocal(ctx, invokeRequest()); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("a call after Close: %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		entered := make(chan struct{})
		s := startServer(t, 0, func(ctx context.Context, ex *filters.Exchange) error {
			close(entered)
			<-ctx.Done() // a call that only ends when it is cancelled
			return ctx.Err()
		})
		got := make(chan error, 1)
		go func() {
			_, err := s.cli.CallLocal(ctx10(t), invokeRequest())
			got <- err
		}()
		<-entered
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() { _ = s.l.Close(ctx); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Close waited past its context")
		}
		if err := <-got; err == nil {
			t.Fatal("the cancelled call succeeded")
		}
	})
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

// TestThroughTheManager: the registered kind, started by the manager with
// a real chain (router, then the local app over HTTP).
func TestThroughTheManager(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-App-Saw", string(ctx.Method())+" "+string(ctx.RequestURI())+" "+string(ctx.Request.Header.Peek("X-Custom")))
		ctx.SetStatusCode(202)
		ctx.SetBody(ctx.Request.Body())
	}}
	go func() { _ = app.Serve(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })

	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: stats.NewRegistry("dapr_")}
	m := listeners.NewManager(rt, time.Second)
	defer m.Close(context.Background())
	err = m.Apply(context.Background(), config.NewSnapshot(&config.Config{
		AppID: "orders", AppPort: ln.Addr().(*net.TCPAddr).Port, AppProtocol: "http", AppChannelAddress: "127.0.0.1",
		Listeners: []config.Listener{{Name: "dapr_internal", Kind: config.ListenerInternal, Addresses: []string{"127.0.0.1:0"}}},
	}, "test"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(m.Addrs("dapr_internal")[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := internalv1pb.NewServiceInvocationClient(conn).CallLocal(ctx10(t), invokeRequest())
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() != 202 || string(resp.GetMessage().GetData().GetValue()) != `{"id":1}` ||
		values(resp.GetHeaders())["x-app-saw"][0] != "PUT /orders/new?a=1&b=2 a" {
		t.Fatalf("response %v", resp)
	}
}

func BenchmarkDecodeEncode(b *testing.B) {
	l := &Listener{name: "dapr_internal", appID: []byte("orders")}
	req := invokeRequest()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ex := filters.AcquireExchange(true)
		l.decode(ctx, ex, req)
		ex.Resp.SetStatusCode(200)
		ex.Resp.Header.Set("X-Resp", "r")
		ex.Resp.SetBodyString("ok")
		_ = encode(ex)
		filters.ReleaseExchange(ex)
	}
}

func BenchmarkCallLocal(b *testing.B) {
	s := startServer(b, 0, func(_ context.Context, ex *filters.Exchange) error { return answer(ex) })
	req := invokeRequest()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.cli.CallLocal(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
