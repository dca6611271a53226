package grpcwire

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	internalv1pb "github.com/dapr/dapr/pkg/proto/internals/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func sampleRequest() *internalv1pb.InternalInvokeRequest {
	return &internalv1pb.InternalInvokeRequest{
		Ver: internalv1pb.APIVersion_V1,
		Message: &commonv1pb.InvokeRequest{Method: "neworder", ContentType: "application/json",
			Data:          &anypb.Any{Value: []byte(`{"id":1}`)},
			HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_PUT, Querystring: "a=1"}},
		Metadata: map[string]*internalv1pb.ListStringValue{"x-custom": {Values: []string{"v"}}},
	}
}

// TestRawCodec: frames cross the codec byte for byte, other messages are
// proto-encoded, and the codec keeps the standard name.
func TestRawCodec(t *testing.T) {
	if RawCodec.Name() != "proto" {
		t.Fatalf("name %q", RawCodec.Name())
	}
	msg := sampleRequest()
	wire, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}

	f := new(Frame)
	if err := RawCodec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(Bytes(f), wire) {
		t.Fatal("Unmarshal into a frame changed the bytes")
	}
	out, err := RawCodec.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Materialize(), wire) {
		t.Fatal("Marshal of a frame changed the bytes")
	}

	// Anything else is proto.
	enc, err := RawCodec.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	back := new(internalv1pb.InternalInvokeRequest)
	if err := RawCodec.Unmarshal(enc, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, msg) {
		t.Fatalf("proto round trip: %v", back)
	}
	if err := RawCodec.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff, 0xff, 0xff})}, back); err == nil {
		t.Fatal("garbage decoded into a message without an error")
	}

	// The frame does not alias the buffer it was decoded from.
	buf := append([]byte(nil), wire...)
	if err := RawCodec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(buf)}, f); err != nil {
		t.Fatal(err)
	}
	clear(buf)
	if !bytes.Equal(Bytes(f), wire) {
		t.Fatal("the frame aliases the codec's buffer")
	}
}

// TestFrameThroughStandardCodec: a server using grpc's default proto codec
// receives and re-sends any message as a Frame without changing it.
func TestFrameThroughStandardCodec(t *testing.T) {
	std := encoding.GetCodecV2(protoenc.Name)
	msg := sampleRequest()
	wire, _ := proto.Marshal(msg)
	f := new(Frame)
	if err := std.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, f); err != nil {
		t.Fatal(err)
	}
	out, err := std.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	back := new(internalv1pb.InternalInvokeRequest)
	if err := proto.Unmarshal(out.Materialize(), back); err != nil || !proto.Equal(back, msg) {
		t.Fatalf("standard codec changed the frame: %v %v", err, back)
	}
	var g Frame
	SetBytes(&g, []byte{0x0a, 0x01, 'x'})
	if !bytes.Equal(Bytes(&g), []byte{0x0a, 0x01, 'x'}) {
		t.Fatal("SetBytes/Bytes")
	}
}

// upstream is an app's gRPC server that echoes frames. Metadata drives it:
// x-fail: answer that code (with an ErrorInfo) after echoing; x-early:
// answer that code before reading anything.
type upstream struct {
	addr     string
	gotMD    chan metadata.MD
	canceled chan struct{}
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String(), gotMD: make(chan metadata.MD, 16), canceled: make(chan struct{}, 16)}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		u.gotMD <- md
		if v := md.Get("x-early"); len(v) > 0 {
			c, _ := strconv.Atoi(v[0])
			return status.Error(codes.Code(c), "refused early")
		}
		if err := ss.SendHeader(metadata.Pairs("x-up", "1")); err != nil {
			return err
		}
		ss.SetTrailer(metadata.Pairs("x-trailer", "t"))
		f := new(Frame)
		for {
			err := ss.RecvMsg(f)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if ss.Context().Err() != nil {
					u.canceled <- struct{}{}
				}
				return err
			}
			if err := ss.SendMsg(f); err != nil {
				return err
			}
		}
		if v := md.Get("x-fail"); len(v) > 0 {
			c, _ := strconv.Atoi(v[0])
			st, _ := status.New(codes.Code(c), "app failed").WithDetails(&errdetails.ErrorInfo{Reason: "ERR_APP", Domain: "app.example"})
			return st.Err()
		}
		return nil
	}))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return u
}

// startProxy serves every method by pumping it to up, as the gRPC app
// cluster does; the value Pump returned is sent on pumped.
func startProxy(t testing.TB, up string, opts ...grpc.ServerOption) (addr string, pumped chan error) {
	t.Helper()
	conn, err := grpc.NewClient(up, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pumped = make(chan error, 16)
	srv := grpc.NewServer(append(opts, grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		md, _ := metadata.FromIncomingContext(ss.Context())
		ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), OutgoingFromIncoming(md)))
		defer cancel()
		cs, err := conn.NewStream(ctx, StreamDesc, method, grpc.ForceCodecV2(RawCodec))
		if err != nil {
			return err
		}
		err = Pump(ss, cs, cancel)
		pumped <- err
		return err
	}))...)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), pumped
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestPump(t *testing.T) {
	up := startUpstream(t)
	proxy, pumped := startProxy(t, up.addr)
	conn := dial(t, proxy)

	t.Run("messages, headers and trailers cross both ways", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-custom", "c", "dapr-app-id", "orders")
		cs, err := conn.NewStream(ctx, StreamDesc, "/test.Echo/Chat")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			payload := bytes.Repeat([]byte{byte('a' + i)}, 1+i*10000)
			if err := cs.SendMsg(&commonv1pb.StreamPayload{Data: payload, Seq: uint64(i)}); err != nil {
				t.Fatal(err)
			}
			var got commonv1pb.StreamPayload
			if err := cs.RecvMsg(&got); err != nil {
				t.Fatal(err)
			}
			if got.GetSeq() != uint64(i) || !bytes.Equal(got.GetData(), payload) {
				t.Fatalf("message %d came back as seq %d, %d bytes", i, got.GetSeq(), len(got.GetData()))
			}
		}
		if err := cs.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := cs.RecvMsg(new(commonv1pb.StreamPayload)); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
		if h, _ := cs.Header(); len(h.Get("x-up")) != 1 || h.Get("x-up")[0] != "1" {
			t.Fatalf("header %v", h)
		}
		if tr := cs.Trailer(); len(tr.Get("x-trailer")) != 1 || tr.Get("x-trailer")[0] != "t" {
			t.Fatalf("trailer %v", tr)
		}
		md := wait(t, up.gotMD, "upstream metadata")
		if md.Get("x-custom")[0] != "c" || md.Get("dapr-app-id")[0] != "orders" {
			t.Fatalf("upstream got metadata %v", md)
		}
		if err := wait(t, pumped, "Pump"); err != nil {
			t.Fatalf("Pump returned %v", err)
		}
	})

	for _, tc := range []struct {
		name string
		kv   []string
		code codes.Code
		msg  string
	}{
		{"upstream status after the stream", []string{"x-fail", strconv.Itoa(int(codes.NotFound))}, codes.NotFound, "app failed"},
		{"upstream refuses before reading", []string{"x-early", strconv.Itoa(int(codes.PermissionDenied))}, codes.PermissionDenied, "refused early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cs, err := conn.NewStream(metadata.AppendToOutgoingContext(ctx, tc.kv...), StreamDesc, "/test.Echo/Chat")
			if err != nil {
				t.Fatal(err)
			}
			_ = cs.SendMsg(&commonv1pb.StreamPayload{Data: []byte("x")})
			_ = cs.CloseSend()
			var err2 error
			for err2 == nil {
				err2 = cs.RecvMsg(new(commonv1pb.StreamPayload))
			}
			st := status.Convert(err2)
			if st.Code() != tc.code || st.Message() != tc.msg {
				t.Fatalf("client got %v, want %v %q", err2, tc.code, tc.msg)
			}
			if tc.code == codes.NotFound {
				if len(st.Details()) != 1 || st.Details()[0].(*errdetails.ErrorInfo).GetReason() != "ERR_APP" {
					t.Fatalf("details lost: %v", st.Details())
				}
			}
			<-up.gotMD
			if err := wait(t, pumped, "Pump"); status.Code(err) != tc.code {
				t.Fatalf("Pump returned %v", err)
			}
		})
	}

	t.Run("a caller that goes away cancels the upstream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cs, err := conn.NewStream(ctx, StreamDesc, "/test.Echo/Chat")
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.SendMsg(&commonv1pb.StreamPayload{Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if err := cs.RecvMsg(new(commonv1pb.StreamPayload)); err != nil {
			t.Fatal(err)
		}
		cancel()
		<-up.gotMD
		if err := wait(t, pumped, "Pump"); status.Code(err) != codes.Canceled {
			t.Fatalf("Pump returned %v, want Canceled", err)
		}
		wait(t, up.canceled, "the upstream to see the cancellation")
	})
}

// TestPumpDownstreamFailure: a downstream message the proxy refuses (over
// its size limit) ends the call with that status, and the upstream, which
// was waiting for more, is cancelled rather than left waiting.
func TestPumpDownstreamFailure(t *testing.T) {
	up := startUpstream(t)
	proxy, pumped := startProxy(t, up.addr, grpc.MaxRecvMsgSize(1024))
	conn := dial(t, proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, StreamDesc, "/test.Echo/Chat")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(&commonv1pb.StreamPayload{Data: []byte("small")}); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(new(commonv1pb.StreamPayload)); err != nil {
		t.Fatal(err)
	}
	<-up.gotMD
	_ = cs.SendMsg(&commonv1pb.StreamPayload{Data: bytes.Repeat([]byte("x"), 4096)})
	if err := wait(t, pumped, "Pump"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Pump returned %v, want ResourceExhausted", err)
	}
	wait(t, up.canceled, "the upstream to be cancelled")
	if err := cs.RecvMsg(new(commonv1pb.StreamPayload)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("caller got %v, want ResourceExhausted", err)
	}
}

func BenchmarkRawCodecFrame(b *testing.B) {
	wire, _ := proto.Marshal(sampleRequest())
	in := mem.BufferSlice{mem.SliceBuffer(wire)}
	f := new(Frame)
	b.ReportAllocs()
	for b.Loop() {
		if err := RawCodec.Unmarshal(in, f); err != nil {
			b.Fatal(err)
		}
		if _, err := RawCodec.Marshal(f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawCodecProto(b *testing.B) {
	msg := sampleRequest()
	back := new(internalv1pb.InternalInvokeRequest)
	b.ReportAllocs()
	for b.Loop() {
		out, err := RawCodec.Marshal(msg)
		if err != nil {
			b.Fatal(err)
		}
		if err := RawCodec.Unmarshal(out, back); err != nil {
			b.Fatal(err)
		}
		out.Free()
	}
}

// BenchmarkPumpRoundTrip measures one message through the proxy and back
// on an open stream (real sockets on 127.0.0.1).
func BenchmarkPumpRoundTrip(b *testing.B) {
	up := startUpstream(b)
	proxy, _ := startProxy(b, up.addr)
	conn := dial(b, proxy)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := conn.NewStream(ctx, StreamDesc, "/test.Echo/Chat")
	if err != nil {
		b.Fatal(err)
	}
	msg := &commonv1pb.StreamPayload{Data: bytes.Repeat([]byte("x"), 1024)}
	var got commonv1pb.StreamPayload
	b.ReportAllocs()
	for b.Loop() {
		if err := cs.SendMsg(msg); err != nil {
			b.Fatal(err)
		}
		if err := cs.RecvMsg(&got); err != nil {
			b.Fatal(err)
		}
	}
}
