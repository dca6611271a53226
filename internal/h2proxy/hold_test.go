package h2proxy

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

// stingyApp is an upstream that speaks HTTP/2, reads every frame, grants
// no stream window (SETTINGS_INITIAL_WINDOW_SIZE 0) until grant is closed,
// and then grants 64 MiB to the connection and to every stream it saw.
type stingyApp struct {
	addr  string
	grant chan struct{}
	got   atomic.Int64 // DATA bytes received

	mu    sync.Mutex
	conns []net.Conn
}

// kill closes the connections accepted so far.
func (a *stingyApp) kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, nc := range a.conns {
		_ = nc.Close()
	}
	a.conns = nil
}

func newStingyApp(t *testing.T) *stingyApp {
	t.Helper()
	a := &stingyApp{grant: make(chan struct{})}
	a.addr = acceptAll(t, func(nc net.Conn) {
		a.mu.Lock()
		a.conns = append(a.conns, nc)
		a.mu.Unlock()
		a.serve(nc)
	})
	return a
}

func (a *stingyApp) serve(nc net.Conn) {
	fr := serverFramer(nc)
	if fr == nil {
		return
	}
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	var wmu sync.Mutex // the writes of the grant below and of this loop
	var mu sync.Mutex
	seen := map[uint32]bool{}
	granted := false
	go func() {
		<-a.grant
		wmu.Lock()
		defer wmu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		granted = true
		_ = fr.WriteWindowUpdate(0, 64<<20)
		for id := range seen {
			_ = fr.WriteWindowUpdate(id, 64<<20)
		}
	}()
	eachFrame(fr, func(f http2.Frame) {
		switch f := f.(type) {
		case *http2.HeadersFrame:
			mu.Lock()
			seen[f.StreamID] = true
			if granted {
				wmu.Lock()
				_ = fr.WriteWindowUpdate(f.StreamID, 64<<20)
				wmu.Unlock()
			}
			mu.Unlock()
		case *http2.DataFrame:
			a.got.Add(int64(len(f.Data())))
		}
	})
}

// windowClient is a raw client that sends DATA as fast as the proxy's
// connection and stream windows let it.
type windowClient struct {
	*rawClient
	wmu     sync.Mutex // the framer's write side
	mu      sync.Mutex
	cond    *sync.Cond
	connWin int64
	initWin int64
	streams map[uint32]int64  // stream windows
	status  map[uint32]string // grpc-status of the calls answered
	gone    bool
}

func dialWindowClient(t *testing.T, addr string) *windowClient {
	r := dialRaw(t, addr, 4096)
	_ = r.nc.SetDeadline(time.Time{})
	w := &windowClient{rawClient: r, connWin: defaultWindow, initWin: defaultWindow, streams: map[uint32]int64{}, status: map[uint32]string{}}
	w.cond = sync.NewCond(&w.mu)
	go w.read()
	return w
}

func (w *windowClient) read() {
	defer func() {
		w.mu.Lock()
		w.gone = true
		w.cond.Broadcast()
		w.mu.Unlock()
	}()
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			return
		}
		w.mu.Lock()
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				w.connWin += int64(f.Increment)
			} else if _, ok := w.streams[f.StreamID]; ok {
				w.streams[f.StreamID] += int64(f.Increment)
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					for id := range w.streams {
						w.streams[id] += int64(v) - w.initWin
					}
					w.initWin = int64(v)
				}
				w.wmu.Lock()
				_ = w.fr.WriteSettingsAck()
				w.wmu.Unlock()
			}
		case *http2.RSTStreamFrame:
			delete(w.streams, f.StreamID)
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				w.status[f.StreamID] = field(f.Fields, "grpc-status")
			}
		}
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

// answer waits for the grpc-status that ends call id.
func (w *windowClient) answer(id uint32) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := time.AfterFunc(5*time.Second, func() { w.mu.Lock(); w.gone = true; w.cond.Broadcast(); w.mu.Unlock() })
	defer t.Stop()
	for {
		if st, ok := w.status[id]; ok || w.gone {
			return st
		}
		w.cond.Wait()
	}
}

// open starts a call on stream id.
func (w *windowClient) open(id uint32) {
	w.mu.Lock()
	w.streams[id] = w.initWin
	w.mu.Unlock()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.headers(id, false, grpcRequest("/x.Y/Z")...)
}

// rst resets call id.
func (w *windowClient) rst(id uint32) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
		w.t.Fatal(err)
	}
}

// fill sends on the given streams in 16 KiB frames until neither window
// has room for quiet, or limit bytes were sent, and returns what it sent.
func (w *windowClient) fill(quiet time.Duration, limit int64, ids ...uint32) int64 {
	w.t.Helper()
	buf := make([]byte, maxFrame)
	var sent int64
	for {
		w.mu.Lock()
		var id uint32
		var n int64
		deadline := time.Now().Add(quiet)
		for {
			for _, i := range ids {
				if win, ok := w.streams[i]; ok && win > 0 && w.connWin > 0 {
					id, n = i, min(win, w.connWin, maxFrame)
					break
				}
			}
			n = min(n, limit-sent)
			if n > 0 || sent >= limit || w.gone || time.Now().After(deadline) {
				break
			}
			// Wake up to look at the clock even if no frame comes.
			t := time.AfterFunc(quiet/4, func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
			w.cond.Wait()
			t.Stop()
		}
		if n == 0 {
			w.mu.Unlock()
			return sent
		}
		w.streams[id] -= n
		w.connWin -= n
		w.mu.Unlock()
		w.wmu.Lock()
		err := w.fr.WriteData(id, false, buf[:n])
		w.wmu.Unlock()
		if err != nil {
			w.t.Fatal(err)
		}
		sent += n
	}
}

// TestHoldBounded: a caller that opens calls to an upstream that reads
// nothing can make the proxy hold no more than holdLimit plus one
// connection window, whatever the calls' stream windows add up to; once
// the upstream reads, the held data goes on and the connection flows
// again.
func TestHoldBounded(t *testing.T) {
	app := newStingyApp(t)
	pool := NewPool(app.addr, nil)
	t.Cleanup(pool.Close)
	e := setup(t, func(*Pool) func(*Stream) { return bridgeAll(pool) })
	w := dialWindowClient(t, e.proxyAddr)
	ids := []uint32{1, 3, 5, 7, 9, 11}
	for _, id := range ids {
		w.open(id)
	}
	sent := w.fill(500*time.Millisecond, 1<<30, ids...)
	// holdLimit plus one connection window is 2 MiB; six stream windows
	// would take 6 MiB.
	if max := int64(2 << 20); sent > max || sent < 1<<20 {
		t.Fatalf("the proxy took %d bytes from a caller whose upstream reads nothing; want between %d and %d", sent, window, max)
	}
	if got := app.got.Load(); got != 0 {
		t.Fatalf("the upstream got %d bytes without granting any window", got)
	}
	close(app.grant)
	more := w.fill(time.Second, 4*window, ids...)
	if more < 4*window {
		t.Fatalf("after the upstream granted window the caller could send only %d more bytes", more)
	}
	deadline := time.Now().Add(5 * time.Second)
	for app.got.Load() < sent+more && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := app.got.Load(); got != sent+more {
		t.Fatalf("the upstream got %d of the %d bytes sent", got, sent+more)
	}
}

// heldCalls opens three calls to a stingyApp and fills the proxy with
// their data as far as it takes it.
func heldCalls(t *testing.T) (*stingyApp, *windowClient, []uint32) {
	t.Helper()
	app := newStingyApp(t)
	pool := NewPool(app.addr, nil)
	t.Cleanup(pool.Close)
	e := setup(t, func(*Pool) func(*Stream) { return bridgeAll(pool) })
	w := dialWindowClient(t, e.proxyAddr)
	ids := []uint32{1, 3, 5}
	for _, id := range ids {
		w.open(id)
	}
	if sent := w.fill(500*time.Millisecond, 1<<30, ids...); sent < 1<<20 {
		t.Fatalf("the proxy took only %d bytes", sent)
	}
	return app, w, ids
}

// TestHoldReleasedOnReset: data queued for calls that the caller resets is
// dropped and its credit given back, so the connection flows again.
func TestHoldReleasedOnReset(t *testing.T) {
	_, w, ids := heldCalls(t)
	for _, id := range ids {
		w.rst(id)
	}
	w.open(13)
	w.open(15)
	if more := w.fill(time.Second, 1<<30, 13, 15); more < window {
		t.Fatalf("after resetting the held calls the caller could send only %d bytes on new ones", more)
	}
}

// TestHoldReleasedOnFail: data that arrived for calls the handler answers
// without bridging is dropped and its credit given back.
func TestHoldReleasedOnFail(t *testing.T) {
	release := make(chan struct{})
	e := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) {
			if st.s.id < 9 {
				<-release
			}
			st.Fail(codes.PermissionDenied, "no", nil)
		}
	})
	w := dialWindowClient(t, e.proxyAddr)
	ids := []uint32{1, 3, 5, 7}
	for _, id := range ids {
		w.open(id)
	}
	if sent := w.fill(500*time.Millisecond, 1<<30, ids...); sent < 1<<20 {
		t.Fatalf("sent %d", sent)
	}
	close(release)
	// The held calls are answered and reset (the caller had not ended
	// them). New calls are answered at once: their data is taken and
	// dropped, by the call or after it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var more int64
	for id := uint32(9); more < 2*window && ctx.Err() == nil; id += 2 {
		w.open(id)
		more += w.fill(100*time.Millisecond, 1<<30, id)
	}
	if more < 2*window {
		t.Fatalf("after the held calls were answered the caller could send only %d bytes", more)
	}
}

// TestHoldReleasedOnUpstreamFailure: data queued on an upstream connection
// that fails is dropped and its credit given back to the caller's
// connection.
func TestHoldReleasedOnUpstreamFailure(t *testing.T) {
	app, w, ids := heldCalls(t)
	app.kill()
	for _, id := range ids {
		if got := w.answer(id); got != "14" {
			t.Fatalf("call %d after its upstream failed: grpc-status %q", id, got)
		}
	}
	// New calls go to a new upstream connection that reads nothing either:
	// the caller's connection takes up to the limit again.
	w.open(7)
	w.open(9)
	if more := w.fill(500*time.Millisecond, 1<<30, 7, 9); more < 1<<20 {
		t.Fatalf("after the upstream failed the caller could send only %d bytes on new calls", more)
	}
}
