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
// holds up the other calls on its app connection for writeStall at most;
// then its own connection is closed and the others go on.
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*writeStall)
	defer cancel()
	begin := time.Now()
	if _, err := e.c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("another caller's call after %v: %v", time.Since(begin), err)
	}
	// The stuck caller's connection was closed, which ended its call at
	// the app.
	select {
	case <-e.a.outEnd:
	case <-time.After(3 * writeStall):
		t.Fatal("the stuck caller's call goes on at the app")
	}
}
