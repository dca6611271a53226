package h2proxy

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// silentPeer is an upstream that takes calls and then says nothing, not
// even to PINGs (a host gone without closing the connection). Its SETTINGS
// carry settingAnswersPings when pingsOK. It counts the PINGs it got.
func silentPeer(t *testing.T, pingsOK bool) (addr string, pings *atomic.Int32) {
	pings = new(atomic.Int32)
	addr = acceptAll(t, func(nc net.Conn) {
		fr := serverFramer(nc)
		if fr == nil {
			return
		}
		if pingsOK {
			_ = fr.WriteSettings(http2.Setting{ID: settingAnswersPings, Val: 1})
		} else {
			_ = fr.WriteSettings()
		}
		eachFrame(fr, func(f http2.Frame) {
			if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
				pings.Add(1)
			}
		})
	})
	return addr, pings
}

// proxyWithPool starts a proxy that bridges every call to pool.
func proxyWithPool(t *testing.T, pool *Pool) testgrpc.TestServiceClient {
	t.Helper()
	t.Cleanup(pool.Close)
	e := setup(t, func(*Pool) func(*Stream) { return bridgeAll(pool) })
	return e.c
}

// A peer that said it answers PINGs and then goes silent under a call is
// PINGed once; when that goes unanswered too, the connection is given up
// and the call fails as Unavailable, long before its own deadline.
func TestKeepaliveSilentPeer(t *testing.T) {
	const keepalive = 50 * time.Millisecond
	addr, pings := silentPeer(t, true)
	c := proxyWithPool(t, NewPool(addr, nil).WithKeepalive(keepalive))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	took := time.Since(begin)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "keepalive PING") {
		t.Fatalf("after %v: %v; want Unavailable for an unanswered keepalive PING", took, err)
	}
	if n := pings.Load(); n != 1 {
		t.Fatalf("the peer got %d PINGs, want 1", n)
	}
	t.Logf("the call failed %v after it was sent (keepalive %v)", took, keepalive)
}

// A peer that did not say it answers PINGs (a grpc-go server, daprd) is
// never PINGed: its silent call waits for its own deadline.
func TestKeepaliveOnlyWhenOffered(t *testing.T) {
	addr, pings := silentPeer(t, false)
	c := proxyWithPool(t, NewPool(addr, nil).WithKeepalive(20*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want the call's own deadline", err)
	}
	if n := pings.Load(); n != 0 {
		t.Fatalf("the peer got %d PINGs, want none", n)
	}
}

// A call that outlives many keepalive periods goes through: through a second proxy (which says it answers PINGs) and
// straight to a grpc-go app (which is not PINGed, and so does not close the
// connection for too many PINGs).
func TestKeepaliveSlowCall(t *testing.T) {
	const keepalive = 10 * time.Millisecond
	for _, via := range []string{"proxy", "grpc-go app"} {
		t.Run(via, func(t *testing.T) {
			e := setup(t, nil) // the app, and a proxy in front of it
			addr := e.proxyAddr
			if via == "grpc-go app" {
				addr = e.appAddr
			}
			pool := NewPool(addr, nil).WithKeepalive(keepalive)
			c := proxyWithPool(t, pool)
			go func() {
				time.Sleep(50 * keepalive)
				close(e.a.sleep)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("sleep")}})
			if err != nil || string(resp.GetPayload().GetBody()) != "sleep" {
				t.Fatalf("%v %v", resp, err)
			}
			// The proxy said it answers PINGs (so it was PINGed through the
			// call's silence, and answered); the app did not.
			pool.mu.Lock()
			pinged := len(pool.conns) == 1 && pool.conns[0].answersPings.Load()
			pool.mu.Unlock()
			if pinged != (via == "proxy") {
				t.Fatalf("PINGs offered: %v", pinged)
			}
		})
	}
}
