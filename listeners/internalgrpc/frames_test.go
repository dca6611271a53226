package internalgrpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-proxy/switchyard/clusters/grpcapp"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
)

// echoApp is an app's gRPC server that echoes every message of any method
// and answers with x-caller set to the dapr-caller-app-id it got.
func echoApp(t *testing.T) string {
	t.Helper()
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		return echo(ss, metadata.Pairs("x-caller", first(md.Get(grpcwire.MDCallerID))))
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// echo sends hdr, then every message of ss back until the caller ends.
func echo(ss grpc.ServerStream, hdr metadata.MD) error {
	if err := ss.SendHeader(hdr); err != nil {
		return err
	}
	f := new(grpcwire.Frame)
	for {
		if err := ss.RecvMsg(f); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}

// chat sends three messages on an echoed stream, checks each comes back,
// and closes it.
func chat(t *testing.T, cs grpc.ClientStream) {
	t.Helper()
	for i := range 3 {
		want := &commonv1pb.StreamPayload{Data: bytes.Repeat([]byte{'a' + byte(i)}, 100*i+1), Seq: uint64(i)}
		if err := cs.SendMsg(want); err != nil {
			t.Fatal(err)
		}
		var got commonv1pb.StreamPayload
		if err := cs.RecvMsg(&got); err != nil {
			t.Fatal(err)
		}
		if got.GetSeq() != want.GetSeq() || !bytes.Equal(got.GetData(), want.GetData()) {
			t.Fatalf("message %d came back as %v", i, &got)
		}
	}
	_ = cs.CloseSend()
	if err := cs.RecvMsg(new(commonv1pb.StreamPayload)); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// TestProxyFrames: in frame mode (the default) a proxied stream a peer
// forwards reaches the chain as an h2proxy stream for our app, with the
// caller's id, and the gRPC app cluster bridges it to the app.
func TestProxyFrames(t *testing.T) {
	app, err := grpcapp.New(grpcapp.Options{Name: "app", AppID: "orders", Endpoints: []string{echoApp(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	var native any
	s := startServer(t, 0, func(ctx context.Context, ex *filters.Exchange) error {
		native = ex.Stream.Native()
		if string(ex.Method) == "my.pkg.Greeter/Deny" {
			return filters.NewError(filters.ErrCodePermissionDenied, http.StatusForbidden, codes.PermissionDenied, "denied")
		}
		return app.Handle(ctx, ex)
	})
	ctx := metadata.AppendToOutgoingContext(ctx10(t), "dapr-caller-app-id", "checkout", "x-custom", "c")
	cs, err := s.conn.NewStream(ctx, grpcwire.StreamDesc, "/my.pkg.Greeter/Chat")
	if err != nil {
		t.Fatal(err)
	}
	chat(t, cs)
	if h, _ := cs.Header(); first(h.Get("x-caller")) != "checkout" {
		t.Fatalf("header %v", h)
	}
	if _, ok := native.(*h2proxy.Stream); !ok {
		t.Fatalf("the chain got a %T, want an *h2proxy.Stream", native)
	}
	got := s.last(t)
	if got.fullMethod != "/my.pkg.Greeter/Chat" || got.key != "/invoke/orders/method/my.pkg.Greeter/Chat" ||
		got.caller != "checkout" || got.protocol != filters.ProtocolInternal || got.remote != "127.0.0.1" {
		t.Fatalf("decoded %+v", got)
	}
	if first(got.headers["x-custom"]) != "c" {
		t.Fatalf("headers %v", got.headers)
	}

	cs, err = s.conn.NewStream(ctx10(t), grpcwire.StreamDesc, "/my.pkg.Greeter/Deny")
	if err != nil {
		t.Fatal(err)
	}
	_ = cs.CloseSend()
	err = cs.RecvMsg(new(commonv1pb.StreamPayload))
	if code, reason, hc := daprError(t, err); code != codes.PermissionDenied || reason != filters.ErrCodePermissionDenied || hc != "403" {
		t.Fatalf("err %v", err)
	}
}
