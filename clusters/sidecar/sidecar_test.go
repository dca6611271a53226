package sidecar

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	internalv1pb "github.com/dapr/dapr/pkg/proto/internals/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-proxy/switchyard/filters"
)

// peer is an in-process internal API server on 127.0.0.1.
type peer struct {
	internalv1pb.UnimplementedServiceInvocationServer
	addr  string
	calls atomic.Int32
	fail  codes.Code // answer this transport-like status (no ErrorInfo)
	last  atomic.Pointer[internalv1pb.InternalInvokeRequest]
}

func (p *peer) CallLocal(_ context.Context, in *internalv1pb.InternalInvokeRequest) (*internalv1pb.InternalInvokeResponse, error) {
	p.calls.Add(1)
	p.last.Store(in)
	if p.fail != codes.OK {
		return nil, status.Error(p.fail, "peer failure")
	}
	return &internalv1pb.InternalInvokeResponse{
		Status:  &internalv1pb.Status{Code: 201},
		Headers: map[string]*internalv1pb.ListStringValue{"x-peer": {Values: []string{p.addr}}},
		Message: &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: in.GetMessage().GetData().GetValue()}, ContentType: "text/plain"},
	}, nil
}

func startPeer(t *testing.T, fail codes.Code) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{addr: ln.Addr().String(), fail: fail}
	srv := grpc.NewServer()
	internalv1pb.RegisterServiceInvocationServer(srv, p)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return p
}

// deadAddr is an address that refuses connections.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func exchange(idempotent bool) *filters.Exchange {
	ex := filters.AcquireExchange(true)
	ex.Req.Header.SetMethod("POST")
	ex.Req.Header.Set("X-Custom", "v")
	ex.Req.SetBodyString("hello")
	ex.SetInvoke([]byte("target"), []byte("m"))
	ex.Idempotent = idempotent
	return ex
}

func TestHandle(t *testing.T) {
	good := startPeer(t, codes.OK)
	unavailable := startPeer(t, codes.Unavailable)
	cases := []struct {
		name       string
		endpoints  []string
		idempotent bool
		wantErr    codes.Code
		wantCalls  map[*peer]int32
	}{
		{"one good endpoint", []string{good.addr}, false, codes.OK, map[*peer]int32{good: 1}},
		{"refused endpoint is ejected and retried elsewhere", []string{deadAddr(t), good.addr}, false, codes.OK, map[*peer]int32{good: 1}},
		{"all refused: retries with backoff then fails", []string{deadAddr(t)}, false, codes.Unavailable, nil},
		{"unavailable after sending: not retried", []string{unavailable.addr}, false, codes.Unavailable, map[*peer]int32{unavailable: 1}},
		{"unavailable after sending, idempotent: retried 3 times", []string{unavailable.addr}, true, codes.Unavailable, map[*peer]int32{unavailable: 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := map[*peer]int32{good: good.calls.Load(), unavailable: unavailable.calls.Load()}
			c, err := New(Options{AppID: "target", SelfAppID: "me", Endpoints: tc.endpoints, Backoff: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for range 2 { // the second call also sees ejections
				ex := exchange(tc.idempotent)
				err = c.Handle(context.Background(), ex)
				code := codes.OK
				if err != nil {
					code = filters.AsError(err, filters.KindInvoke).GRPCCode
				}
				if code != tc.wantErr {
					t.Fatalf("err %v, want code %v", err, tc.wantErr)
				}
				if err == nil {
					if ex.Resp.StatusCode() != 201 || string(ex.Resp.Body()) != "hello" || string(ex.Resp.Header.Peek("x-peer")) != good.addr {
						t.Fatalf("response %d %q %q", ex.Resp.StatusCode(), ex.Resp.Body(), ex.Resp.Header.Peek("x-peer"))
					}
					md := good.last.Load().GetMetadata()
					if md["dapr-caller-app-id"].GetValues()[0] != "me" || md["dapr-callee-app-id"].GetValues()[0] != "target" || md["x-custom"].GetValues()[0] != "v" {
						t.Fatalf("metadata %v", md)
					}
				}
				filters.ReleaseExchange(ex)
				if tc.wantCalls != nil {
					break
				}
			}
			for p, n := range tc.wantCalls {
				if got := p.calls.Load() - before[p]; got != n {
					t.Errorf("peer %s got %d calls, want %d", p.addr, got, n)
				}
			}
		})
	}
}

func BenchmarkBuildRequest(b *testing.B) {
	c, err := New(Options{AppID: "target", SelfAppID: "me", Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	ex := exchange(false)
	ex.Req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	ex.Req.Header.SetContentType("application/json")
	b.ReportAllocs()
	for b.Loop() {
		cl := callPool.Get().(*call)
		_ = c.buildRequest(ex, cl)
		cl.release()
	}
}

func BenchmarkResponse(b *testing.B) {
	c, _ := New(Options{AppID: "target", SelfAppID: "me", Endpoints: []string{"127.0.0.1:1"}})
	resp := &internalv1pb.InternalInvokeResponse{
		Status:  &internalv1pb.Status{Code: 200},
		Headers: map[string]*internalv1pb.ListStringValue{"x-a": {Values: []string{"1"}}},
		Message: &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: []byte("hello")}, ContentType: "text/plain"},
	}
	b.ReportAllocs()
	for b.Loop() {
		ex := filters.AcquireExchange(true)
		_ = c.response(ex, resp, resp.Message.Data.Value)
		filters.ReleaseExchange(ex)
	}
}
