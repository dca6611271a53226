package h2proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// TestStuckCaller: a caller that grants a huge window and stops reading
// holds up only its own call: another caller's calls on the same app
// connection are answered while it is stuck, and after writeStall its
// connection is closed, which ends its call at the app.
func TestStuckCaller(t *testing.T) {
	e := setup(t, nil)
	if _, err := e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, e.proxyAddr, 4096, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = r.nc.(*net.TCPConn).SetReadBuffer(4096)
	_ = r.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	r.headers(1, false, grpcRequest("/grpc.testing.TestService/StreamingOutputCall")...)
	var ps []*testgrpc.ResponseParameters
	for i := 0; i < 64; i++ {
		ps = append(ps, &testgrpc.ResponseParameters{Size: 1 << 20})
	}
	msg, _ := proto.Marshal(&testgrpc.StreamingOutputCallRequest{ResponseParameters: ps})
	body := append([]byte{0, 0, 0, byte(len(msg) >> 8), byte(len(msg))}, msg...)
	_ = r.fr.WriteData(1, true, body)
	time.Sleep(time.Second)
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*writeStall)
		begin := time.Now()
		_, err := e.c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		cancel()
		if err != nil {
			t.Fatalf("another caller's call %d after %v: %v", i, time.Since(begin), err)
		}
		select {
		case <-e.a.outEnd:
			t.Fatalf("another caller's call %d was answered only after the stuck caller's connection was closed (%v)", i, time.Since(begin))
		default:
		}
	}
	// The stuck caller's connection is closed, which ends its call at
	// the app.
	select {
	case <-e.a.outEnd:
	case <-time.After(3 * writeStall):
		t.Fatal("the stuck caller's call goes on at the app")
	}
}

// TestSlowReader: a caller that stops reading for a while and then reads
// gets its whole answer, in order, from the writer goroutine that took over
// its connection meanwhile, and other calls go on during the pause.
func TestSlowReader(t *testing.T) {
	e := setup(t, nil)
	r := dialRaw(t, e.proxyAddr, 4096, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = r.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	r.headers(1, false, grpcRequest("/grpc.testing.TestService/StreamingOutputCall")...)
	var ps []*testgrpc.ResponseParameters
	for i := 0; i < 24; i++ {
		ps = append(ps, &testgrpc.ResponseParameters{Size: int32(1<<20 + i)})
	}
	msg, _ := proto.Marshal(&testgrpc.StreamingOutputCallRequest{ResponseParameters: ps})
	body := append([]byte{0, 0, 0, byte(len(msg) >> 8), byte(len(msg))}, msg...)
	_ = r.fr.WriteData(1, true, body)
	before := backlogs.Load()
	time.Sleep(500 * time.Millisecond)
	if _, err := e.c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("another call while the caller does not read: %v", err)
	}
	if backlogs.Load() == before {
		t.Fatal("the caller's socket took the whole answer: nothing was left for the writer goroutine")
	}
	var got []byte
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			got = append(got, d.Data()...)
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamEnded() {
			if s := field(h.Fields, "grpc-status"); s != "0" {
				t.Fatalf("grpc-status %q", s)
			}
			break
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			t.Fatalf("reset: %v", rst.ErrCode)
		}
	}
	for i := range ps {
		if len(got) < 5 {
			t.Fatalf("message %d missing", i)
		}
		n := int(got[1])<<24 | int(got[2])<<16 | int(got[3])<<8 | int(got[4])
		var m testgrpc.StreamingOutputCallResponse
		if err := proto.Unmarshal(got[5:5+n], &m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if len(m.GetPayload().GetBody()) != 1<<20+i {
			t.Fatalf("message %d has %d bytes, want %d", i, len(m.GetPayload().GetBody()), 1<<20+i)
		}
		got = got[5+n:]
	}
	if len(got) != 0 {
		t.Fatalf("%d bytes after the last message", len(got))
	}
}
