package h2proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
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
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// rawClient speaks HTTP/2 frame by frame, for protocol-level cases.
type rawClient struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

// dialRaw connects to addr, sends the preface and SETTINGS, and decodes
// header blocks with a table of tableSize bytes.
func dialRaw(t *testing.T, addr string, tableSize uint32, settings ...http2.Setting) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	r := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	r.enc = hpack.NewEncoder(&r.hb)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(tableSize, nil)
	if err := r.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return r
}

// grpcRequest is the header block of a gRPC call of path.
func grpcRequest(path string) []hpack.HeaderField {
	return []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "x"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}}
}

func (r *rawClient) headers(id uint32, end bool, fields ...hpack.HeaderField) {
	r.t.Helper()
	r.hb.Reset()
	for _, f := range fields {
		_ = r.enc.WriteField(f)
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hb.Bytes(),
		EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// answer reads frames until the header block that ends stream id and
// returns its fields.
func (r *rawClient) answer(id uint32) []hpack.HeaderField {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("stream %d: %v", id, err)
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id && h.StreamEnded() {
			return h.Fields
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == id {
			r.t.Fatalf("stream %d reset: %v", id, rst.ErrCode)
		}
	}
}

func field(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// TestPeerHeaderTableSize: a caller whose HPACK decoder keeps no dynamic
// table (SETTINGS_HEADER_TABLE_SIZE 0) can decode every answer.
func TestPeerHeaderTableSize(t *testing.T) {
	e := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) { st.Fail(codes.PermissionDenied, "denied", nil) }
	})
	r := dialRaw(t, e.proxyAddr, 0, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	for id := uint32(1); id <= 7; id += 2 {
		r.headers(id, true, grpcRequest("/x.Y/Z")...)
		if got := field(r.answer(id), "grpc-status"); got != "7" {
			t.Fatalf("stream %d: grpc-status %q", id, got)
		}
	}
}

// TestTrailersBeforeBridge: a caller that ends its request with a HEADERS
// frame (trailers) before the call is bridged still ends it upstream; the
// app answers instead of waiting for the rest of the request.
func TestTrailersBeforeBridge(t *testing.T) {
	var bridge func(*Stream)
	e := setup(t, func(p *Pool) func(*Stream) {
		bridge = bridgeAll(p)
		return func(st *Stream) {
			// The whole request arrives before the call is bridged.
			time.Sleep(200 * time.Millisecond)
			bridge(st)
		}
	})
	r := dialRaw(t, e.proxyAddr, 4096)
	r.headers(1, false, grpcRequest("/grpc.testing.TestService/StreamingInputCall")...)
	msg, err := proto.Marshal(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
	if err := r.fr.WriteData(1, false, body); err != nil {
		t.Fatal(err)
	}
	r.headers(1, true, hpack.HeaderField{Name: "x-trailer", Value: "1"})
	if got := field(r.answer(1), "grpc-status"); got != "0" {
		t.Fatalf("grpc-status %q", got)
	}
}

// TestFailAfterEnd: Fail on a call whose answer already ended sends
// nothing more and leaves its outcome (as Bridge's ctx.Done branch may,
// when the answer completes as the call's context is cancelled).
func TestFailAfterEnd(t *testing.T) {
	errc := make(chan error, 1)
	e := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) {
			st.Fail(codes.PermissionDenied, "first", nil)
			st.Fail(codes.Internal, "second", nil)
			errc <- st.Err()
		}
	})
	r := dialRaw(t, e.proxyAddr, 4096)
	r.headers(1, true, grpcRequest("/x.Y/Z")...)
	if got := field(r.answer(1), "grpc-status"); got != "7" {
		t.Fatalf("grpc-status %q", got)
	}
	if err := <-errc; status.Code(err) != codes.PermissionDenied {
		t.Errorf("outcome %v", err)
	}
	// A PING's ack follows whatever the second Fail wrote.
	if err := r.fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
		if f.Header().StreamID == 1 {
			t.Fatalf("%v on stream 1 after its END_STREAM", f.Header().Type)
		}
	}
}

// TestWindowOverflow: a WINDOW_UPDATE that takes a stream's window past
// 2^31-1 resets that stream with FLOW_CONTROL_ERROR (RFC 9113 6.9.1), and
// the connection goes on.
func TestWindowOverflow(t *testing.T) {
	e := setup(t, nil)
	r := dialRaw(t, e.proxyAddr, 4096)
	r.headers(1, false, grpcRequest("/grpc.testing.TestService/FullDuplexCall")...)
	if err := r.fr.WriteWindowUpdate(1, 1<<31-1); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no reset of the stream: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
			if rst.ErrCode != http2.ErrCodeFlowControl {
				t.Fatalf("reset with %v", rst.ErrCode)
			}
			break
		}
	}
	msg := []byte{0, 0, 0, 0, 0} // an empty SimpleRequest
	r.headers(3, false, grpcRequest("/grpc.testing.TestService/UnaryCall")...)
	if err := r.fr.WriteData(3, true, msg); err != nil {
		t.Fatal(err)
	}
	if got := field(r.answer(3), "grpc-status"); got != "0" {
		t.Fatalf("the next call on the connection: grpc-status %q", got)
	}
}

// TestBadSettingsAndData: a SETTINGS value HTTP/2 forbids closes the
// connection with GOAWAY; DATA after a stream's END_STREAM resets that
// stream with STREAM_CLOSED and the connection goes on.
func TestBadSettingsAndData(t *testing.T) {
	e := setup(t, nil)
	r := dialRaw(t, e.proxyAddr, 4096, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100})
	var code http2.ErrCode
	for code == 0 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			code = g.ErrCode
		}
	}
	if code != http2.ErrCodeProtocol {
		t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR", code)
	}

	r = dialRaw(t, e.proxyAddr, 4096)
	r.headers(1, false, grpcRequest("/grpc.testing.TestService/UnaryCall")...)
	if err := r.fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteData(1, false, []byte("late")); err != nil {
		t.Fatal(err)
	}
	var reset http2.ErrCode
	for reset == 0 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
			reset = rst.ErrCode
		}
	}
	if reset != http2.ErrCodeStreamClosed {
		t.Fatalf("reset %v, want STREAM_CLOSED", reset)
	}
	r.headers(3, false, grpcRequest("/grpc.testing.TestService/UnaryCall")...)
	if err := r.fr.WriteData(3, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if got := field(r.answer(3), "grpc-status"); got != "0" {
		t.Fatalf("the next call on the connection: grpc-status %q", got)
	}
	// DATA on a stream that has ended both ways gets the same answer.
	if err := r.fr.WriteData(3, false, []byte("later")); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM for the ended stream: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 3 {
			if rst.ErrCode != http2.ErrCodeStreamClosed {
				t.Fatalf("reset %v, want STREAM_CLOSED", rst.ErrCode)
			}
			break
		}
	}
}

// TestStreamLimitAdvertised: callers are told how many calls they may have
// open at once, a call over it is refused, and a call that ends makes room.
func TestStreamLimitAdvertised(t *testing.T) {
	old := maxStreams
	maxStreams = 2
	t.Cleanup(func() { maxStreams = old })
	e := setup(t, nil)
	r := dialRaw(t, e.proxyAddr, 4096)
	var limit uint32
	for limit == 0 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			v, ok := sf.Value(http2.SettingMaxConcurrentStreams)
			if !ok {
				t.Fatal("SETTINGS without MAX_CONCURRENT_STREAMS")
			}
			limit = v
		}
	}
	if limit != 2 {
		t.Fatalf("MAX_CONCURRENT_STREAMS %d, want 2", limit)
	}
	call := grpcRequest("/grpc.testing.TestService/UnaryCall")
	r.headers(1, false, call...) // open until its request ends
	r.headers(3, false, call...)
	r.headers(5, false, call...) // one too many
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM for the call over the limit: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("reset of stream %d with %v, want 5 REFUSED_STREAM", rst.StreamID, rst.ErrCode)
			}
			break
		}
	}
	msg := []byte{0, 0, 0, 0, 0} // an empty SimpleRequest
	if err := r.fr.WriteData(1, true, msg); err != nil {
		t.Fatal(err)
	}
	if got := field(r.answer(1), "grpc-status"); got != "0" {
		t.Fatalf("stream 1: grpc-status %q", got)
	}
	r.headers(7, false, call...)
	if err := r.fr.WriteData(7, true, msg); err != nil {
		t.Fatal(err)
	}
	if got := field(r.answer(7), "grpc-status"); got != "0" {
		t.Fatalf("a call after one ended: grpc-status %q", got)
	}
}

// TestGoAwayDrained: an app that says GOAWAY but keeps its connection open
// has it closed by the proxy once the last call on it ended, and the next
// call goes on a new connection.
func TestGoAwayDrained(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	closed := make(chan struct{}, 4)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				fr := serverFramer(nc)
				if fr == nil {
					return
				}
				_ = fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						closed <- struct{}{} // the proxy closed the connection
						return
					}
					if d, ok := f.(*http2.DataFrame); ok && d.StreamEnded() {
						_ = fr.WriteGoAway(d.StreamID, http2.ErrCodeNo, nil)
						writeOK(fr, d.StreamID)
					}
				}
			}()
		}
	}()
	cc := proxyTo(t, ln.Addr().String())
	for i := 0; i < 2; i++ {
		cs, err := cc.NewStream(context.Background(), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/x.Y/Z")
		if err != nil {
			t.Fatal(err)
		}
		_ = cs.SendMsg(&testgrpc.Payload{})
		_ = cs.CloseSend()
		if err := cs.RecvMsg(&testgrpc.Payload{}); !errors.Is(err, io.EOF) {
			t.Fatalf("call %d: %v", i, err)
		}
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d: the connection the app said GOAWAY on is still open", i)
		}
	}
}

// proxyTo starts a proxy that bridges every call to the upstream at addr
// and returns a gRPC client of the proxy (closed when the test ends).
func proxyTo(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	pool := NewPool(addr, nil)
	t.Cleanup(pool.Close)
	e := setup(t, func(*Pool) func(*Stream) { return bridgeAll(pool) })
	cc, err := grpc.NewClient(e.proxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// eachFrame runs fn on each frame read from fr until the connection ends
// (a fake upstream's loop).
func eachFrame(fr *http2.Framer, fn func(http2.Frame)) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		fn(f)
	}
}

// writeOK answers stream id with trailers only, grpc-status 0 (a fake
// upstream's answer).
func writeOK(fr *http2.Framer, id uint32) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range []hpack.HeaderField{{Name: ":status", Value: "200"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "grpc-status", Value: "0"}} {
		_ = enc.WriteField(hf)
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
}

// serverFramer reads a client's preface from nc and returns a framer on it
// (nil when no preface came).
func serverFramer(nc net.Conn) *http2.Framer {
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, pre); err != nil || string(pre) != http2.ClientPreface {
		return nil
	}
	return http2.NewFramer(nc, nc)
}

// acceptAll listens on a free port, runs serve on a goroutine for each
// connection accepted (closed when the test ends) and returns the address.
func acceptAll(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = nc.Close() })
			go serve(nc)
		}
	}()
	return ln.Addr().String()
}

// TestHungApp: an app that accepts connections and never speaks HTTP/2
// fails each call when that call's deadline ends: calls waiting for the
// connection another call is dialing do not wait past their own deadline.
func TestHungApp(t *testing.T) {
	pool := NewPool(acceptAll(t, func(net.Conn) {}), nil)
	t.Cleanup(pool.Close)
	bridge := bridgeAll(pool)
	held := make(chan time.Duration, 16) // how long the proxy held each short call
	e := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) {
			begin := time.Now()
			bridge(st)
			if d, _ := Timeout(st.Header("grpc-timeout")); d < time.Second {
				held <- time.Since(begin)
			}
		}
	})
	// A call with a long deadline dials first and waits for the app.
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := e.c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		first <- err
	}()
	time.Sleep(100 * time.Millisecond)
	var wg sync.WaitGroup
	took := make(chan time.Duration, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			begin := time.Now()
			_, err := e.c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("got %v", err)
			}
			took <- time.Since(begin)
		}()
	}
	wg.Wait()
	close(took)
	for d := range took {
		if d > 2*time.Second {
			t.Fatalf("a call with a 300 ms deadline took %v", d)
		}
	}
	for i := 0; i < 8; i++ {
		select {
		case d := <-held:
			if d > 2*time.Second {
				t.Fatalf("the proxy held a call with a 300 ms deadline for %v", d)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("the proxy still holds %d calls with a 300 ms deadline", 8-i)
		}
	}
	// The first call gives up on the app's SETTINGS after DialTimeout.
	if err := <-first; status.Code(err) != codes.Unavailable {
		t.Fatalf("the first call: %v", err)
	}
}

// TestGoAwayUnseenRetried: a call that the app's GOAWAY says it never
// processed reaches the caller as REFUSED_STREAM, so a gRPC client sends it
// again by itself, and it succeeds on a new connection. Calls the app did
// see are answered on the old connection.
func TestGoAwayUnseenRetried(t *testing.T) {
	var conns atomic.Int32
	addr := acceptAll(t, func(nc net.Conn) {
		n := conns.Add(1)
		fr := serverFramer(nc)
		if fr == nil {
			return
		}
		_ = fr.WriteSettings()
		answered := false
		eachFrame(fr, func(f http2.Frame) {
			switch f := f.(type) {
			case *http2.HeadersFrame:
				if n == 1 && !answered {
					// The first connection goes away before it takes the
					// first call: stream ids above 0 were never seen.
					answered = true
					_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				}
			case *http2.DataFrame:
				if f.StreamEnded() && n > 1 {
					writeOK(fr, f.StreamID)
				}
			}
		})
	})
	cc := proxyTo(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/x.Y/Z")
	if err != nil {
		t.Fatal(err)
	}
	_ = cs.SendMsg(&testgrpc.Payload{})
	_ = cs.CloseSend()
	if err := cs.RecvMsg(&testgrpc.Payload{}); !errors.Is(err, io.EOF) {
		t.Fatalf("the call the app never saw was not sent again: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("the app got %d connections, want 2 (the one going away and a new one)", n)
	}
}
