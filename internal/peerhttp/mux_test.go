package peerhttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// muxPeer is a callee on 127.0.0.1 serving the multiplexed link with h.
type muxPeer struct {
	addr string
	srv  *Server
	ln   net.Listener
	// conns counts accepted connections.
	conns atomic.Int32
}

func startMuxPeer(t testing.TB, h Handler, maxBody int) *muxPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &muxPeer{addr: ln.Addr().String(), srv: NewServer(h, maxBody, context.Background()), ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			go func() {
				pre := make([]byte, len(MuxPreface))
				if _, err := io.ReadFull(c, pre); err != nil || string(pre) != MuxPreface {
					_ = c.Close()
					return
				}
				p.srv.ServeConn(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.srv.Shutdown(ctx)
	})
	return p
}

func muxClient(t testing.TB, addr string) *Client {
	t.Helper()
	d := &net.Dialer{Timeout: time.Second}
	c := NewClient(addr, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, time.Minute, 0)
	t.Cleanup(c.Close)
	return c
}

// echo answers with the request's body, its X-Id header and path.
func echo(_ context.Context, req *fasthttp.Request, resp *fasthttp.Response, _ net.Addr, err error) {
	if err != nil {
		resp.SetStatusCode(400)
		resp.SetBodyString(err.Error())
		return
	}
	resp.SetStatusCode(201)
	resp.Header.SetBytesV("X-Id", req.Header.Peek("X-Id"))
	resp.Header.SetBytesV("X-Path", req.URI().PathOriginal())
	resp.SetBody(req.Body())
}

func newReq(id int, body []byte) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod("POST")
	req.SetRequestURI("/m/" + strconv.Itoa(id))
	req.Header.SetHost("peer")
	req.Header.Set("X-Id", strconv.Itoa(id))
	req.SetBody(body)
	return req
}

// Many calls at once over one connection: every answer is its own call's,
// in whatever order they come back.
func TestMuxConcurrent(t *testing.T) {
	p := startMuxPeer(t, echo, 4<<20)
	c := muxClient(t, p.addr)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				id := g*1000 + i
				body := bytes.Repeat([]byte(strconv.Itoa(id)+"."), 1+id%300)
				req := newReq(id, body)
				resp := fasthttp.AcquireResponse()
				err := c.Do(context.Background(), req, resp)
				switch {
				case err != nil:
					errs <- fmt.Errorf("call %d: %w", id, err)
				case resp.StatusCode() != 201 || string(resp.Header.Peek("X-Id")) != strconv.Itoa(id) ||
					string(resp.Header.Peek("X-Path")) != "/m/"+strconv.Itoa(id) || !bytes.Equal(resp.Body(), body):
					errs <- fmt.Errorf("call %d: got %d id %q path %q, %d body bytes (want %d)", id, resp.StatusCode(),
						resp.Header.Peek("X-Id"), resp.Header.Peek("X-Path"), len(resp.Body()), len(body))
				}
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
				if len(errs) > 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := p.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want the one shared", n)
	}
}

// A body larger than the buffers, both ways.
func TestMuxLargeBody(t *testing.T) {
	p := startMuxPeer(t, echo, 8<<20)
	c := muxClient(t, p.addr)
	body := bytes.Repeat([]byte("0123456789abcdef"), 5<<16) // 5 MiB
	for i := 0; i < 2; i++ {
		req := newReq(i, body)
		resp := fasthttp.AcquireResponse()
		if err := c.Do(context.Background(), req, resp); err != nil || !bytes.Equal(resp.Body(), body) {
			t.Fatalf("call %d: %v, %d bytes back", i, err, len(resp.Body()))
		}
	}
}

// The caller's deadline ends its wait and cancels the call at the callee.
func TestMuxCancel(t *testing.T) {
	canceled := make(chan struct{}, 1)
	p := startMuxPeer(t, func(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, a net.Addr, err error) {
		if string(req.URI().PathOriginal()) == "/slow" {
			select {
			case <-ctx.Done():
				canceled <- struct{}{}
			case <-time.After(5 * time.Second):
			}
		}
		echo(ctx, req, resp, a, err)
	}, 1<<20)
	c := muxClient(t, p.addr)
	req := newReq(1, nil)
	req.SetRequestURI("/slow")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Do(ctx, req, fasthttp.AcquireResponse())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the call returned after %v", d)
	}
	select {
	case <-canceled:
	case <-time.After(2 * time.Second):
		t.Fatal("the callee's call was not canceled")
	}
	// The connection goes on serving.
	resp := fasthttp.AcquireResponse()
	if err := c.Do(context.Background(), newReq(2, []byte("x")), resp); err != nil || resp.StatusCode() != 201 {
		t.Fatalf("after the cancel: %v %d", err, resp.StatusCode())
	}
}

// Shutdown lets the call in flight finish, and a call sent after the
// GOAWAY is not taken: it fails as not sent, so it may go elsewhere.
func TestMuxShutdown(t *testing.T) {
	release := make(chan struct{})
	var seen atomic.Int32
	p := startMuxPeer(t, func(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, a net.Addr, err error) {
		seen.Add(1)
		if string(req.URI().PathOriginal()) == "/hold" {
			<-release
		}
		echo(ctx, req, resp, a, err)
	}, 1<<20)
	c := muxClient(t, p.addr)
	held := make(chan error, 1)
	resp := fasthttp.AcquireResponse()
	go func() {
		req := newReq(1, []byte("held"))
		req.SetRequestURI("/hold")
		held <- c.Do(context.Background(), req, resp)
	}()
	for seen.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- p.srv.Shutdown(context.Background()) }()
	// The GOAWAY reaches the client; the next call is not taken.
	deadline := time.Now().Add(2 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		err = c.Do(context.Background(), newReq(2, []byte("late")), fasthttp.AcquireResponse())
		if err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(err, ErrNotSent) {
		t.Fatalf("a call after the shutdown began: %v, want ErrNotSent", err)
	}
	close(release)
	if err := <-held; err != nil || string(resp.Body()) != "held" {
		t.Fatalf("the call in flight: %v %q", err, resp.Body())
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// A callee that dies with a call in flight: the call fails at once, and not
// as unsent (the app may have seen it).
func TestMuxCalleeDies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 256)
		_, _ = c.Read(buf) // the preface and the request
		_ = c.Close()
	}()
	c := muxClient(t, ln.Addr().String())
	start := time.Now()
	err = c.Do(context.Background(), newReq(1, []byte("x")), fasthttp.AcquireResponse())
	if err == nil || errors.Is(err, ErrNotSent) {
		t.Fatalf("got %v, want a failure that is not ErrNotSent", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("failed after %v", d)
	}
}

// Closing the client lets the calls in flight finish; later ones are not
// sent.
func TestMuxClientClose(t *testing.T) {
	release := make(chan struct{})
	p := startMuxPeer(t, func(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, a net.Addr, err error) {
		<-release
		echo(ctx, req, resp, a, err)
	}, 1<<20)
	c := muxClient(t, p.addr)
	done := make(chan error, 1)
	resp := fasthttp.AcquireResponse()
	go func() { done <- c.Do(context.Background(), newReq(1, []byte("in flight")), resp) }()
	for {
		c.mu.Lock()
		cc := c.cur
		c.mu.Unlock()
		if cc != nil {
			cc.mu.Lock()
			n := len(cc.calls)
			cc.mu.Unlock()
			if n == 1 {
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
	c.Close()
	if err := c.Do(context.Background(), newReq(2, nil), fasthttp.AcquireResponse()); !errors.Is(err, ErrNotSent) {
		t.Fatalf("a call after Close: %v, want ErrNotSent", err)
	}
	close(release)
	if err := <-done; err != nil || string(resp.Body()) != "in flight" {
		t.Fatalf("the call in flight: %v %q", err, resp.Body())
	}
}

func TestMuxRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = muxClient(t, addr).Do(context.Background(), newReq(1, nil), fasthttp.AcquireResponse())
	if !errors.Is(err, ErrNotSent) {
		t.Fatalf("got %v, want ErrNotSent", err)
	}
}

// Bad input: an unknown frame type ends that connection only; a malformed
// request and one over the body limit reach the handler as errors.
func TestMuxBadInput(t *testing.T) {
	p := startMuxPeer(t, echo, 1024)
	raw, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	frame := func(id uint32, typ byte, payload string) []byte {
		return append(appendFrameHeader(nil, len(payload), id, typ), payload...)
	}
	var out []byte
	out = append(out, MuxPreface...)
	out = append(out, frame(1, FrameRequest, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")...) // short body
	out = append(out, frame(2, FrameRequest, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"+string(bytes.Repeat([]byte("a"), 2000)))...)
	if _, err := raw.Write(out); err != nil {
		t.Fatal(err)
	}
	fr := newFrameReader(raw)
	for i := 0; i < 2; i++ {
		n, id, typ, err := fr.next()
		if err != nil || typ != FrameResponse {
			t.Fatalf("answer %d: %v type %d", i, err, typ)
		}
		if err := fr.read(n); err != nil {
			t.Fatal(err)
		}
		var resp fasthttp.Response
		if err := fr.parse(fr.payload, resp.Read); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 400 {
			t.Fatalf("stream %d: status %d (%s), want 400", id, resp.StatusCode(), resp.Body())
		}
	}
	if _, err := raw.Write(frame(3, 9, "")); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := fr.next(); err == nil {
		t.Fatal("the connection stayed open after an unknown frame type")
	}
	// Others are still served.
	resp := fasthttp.AcquireResponse()
	if err := muxClient(t, p.addr).Do(context.Background(), newReq(1, []byte("ok")), resp); err != nil || resp.StatusCode() != 201 {
		t.Fatalf("after the bad input: %v %d", err, resp.StatusCode())
	}
	// Stream ids must grow.
	raw2, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw2.Close()
	_ = raw2.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	_, _ = raw2.Write(append(append([]byte(MuxPreface), frame(5, FrameRequest, req)...), frame(5, FrameRequest, req)...))
	// The connection closes (the first call's answer may or may not get
	// out first); it does not wait for more.
	fr2 := newFrameReader(raw2)
	for i := 0; ; i++ {
		n, _, _, err := fr2.next()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the connection stayed open after a repeated stream id")
			}
			break
		}
		if i > 0 {
			t.Fatal("a repeated stream id was served")
		}
		_ = fr2.skip(n)
	}
}

// The frames of calls made at about the same time leave in fewer writes
// than calls.
func TestMuxBatches(t *testing.T) {
	p := startMuxPeer(t, echo, 1<<20)
	c := muxClient(t, p.addr)
	var wg sync.WaitGroup
	const calls = 64
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Do(context.Background(), newReq(i, []byte("x")), fasthttp.AcquireResponse())
		}()
	}
	wg.Wait()
	c.mu.Lock()
	cc := c.cur
	c.mu.Unlock()
	if cc == nil {
		t.Fatal("no connection")
	}
	if w := cc.w.attempted.Load(); w >= calls {
		t.Fatalf("%d writes for %d calls", w, calls)
	}
}

func BenchmarkMuxCall(b *testing.B) {
	p := startMuxPeer(b, echo, 1<<20)
	c := muxClient(b, p.addr)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := newReq(1, []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
		resp := fasthttp.AcquireResponse()
		for pb.Next() {
			if err := c.Do(context.Background(), req, resp); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A request over the callee's limit that comes in parts is answered with
// the error, and the connection goes on serving.
func TestMuxPartsOverLimit(t *testing.T) {
	p := startMuxPeer(t, echo, 1024) // parts are refused past 1 MiB + 1 KiB
	c := muxClient(t, p.addr)
	resp := fasthttp.AcquireResponse()
	if err := c.Do(context.Background(), newReq(1, bytes.Repeat([]byte("a"), 2<<20)), resp); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 400 || !bytes.Contains(resp.Body(), []byte("body size exceeds")) {
		t.Fatalf("status %d %q, want the body-too-large error", resp.StatusCode(), resp.Body())
	}
	if err := c.Do(context.Background(), newReq(2, []byte("small")), resp); err != nil || string(resp.Body()) != "small" {
		t.Fatalf("after the refused request: %v %q", err, resp.Body())
	}
	if n := p.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// A large body goes in parts, and a small call made while it is being sent
// goes out between them instead of waiting for all of it.
func TestMuxPartsInterleave(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := make(chan struct{})
	type seen struct {
		id   uint32
		last bool // the message's last frame
	}
	order := make(chan []seen, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		<-start // read nothing until the small call is queued
		pre := make([]byte, len(MuxPreface))
		if _, err := io.ReadFull(conn, pre); err != nil {
			return
		}
		fr := newFrameReader(conn)
		var got []seen
		w := newFrameWriter(conn)
		for done := 0; done < 2; {
			n, id, typ, err := fr.next()
			if err != nil {
				return
			}
			if err := fr.skip(n); err != nil {
				return
			}
			last := typ&FlagMore == 0
			got = append(got, seen{id, last})
			if last {
				done++
				w.send(id, FrameResponse, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
			}
		}
		order <- got
		_, _ = io.Copy(io.Discard, conn)
	}()
	c := muxClient(t, ln.Addr().String())
	big := make(chan error, 1)
	go func() { big <- c.Do(context.Background(), newReq(1, make([]byte, 32<<20)), fasthttp.AcquireResponse()) }()
	// The big call has sent parts (and, 32 MiB being more than the socket
	// buffers hold while the peer reads nothing, soon waits in a write).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		c.mu.Lock()
		cc := c.cur
		c.mu.Unlock()
		if cc != nil && cc.w.attempted.Load() >= 4 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	small := make(chan error, 1)
	go func() { small <- c.Do(context.Background(), newReq(2, []byte("small")), fasthttp.AcquireResponse()) }()
	time.Sleep(50 * time.Millisecond)
	close(start)
	if err := <-small; err != nil {
		t.Fatal(err)
	}
	if err := <-big; err != nil {
		t.Fatal(err)
	}
	got := <-order
	// Stream 1 is the big request, stream 2 the small one: the small one
	// must come before the big one's last part.
	var smallAt, bigEnd = -1, -1
	for i, s := range got {
		if s.id == 2 && s.last {
			smallAt = i
		}
		if s.id == 1 && s.last {
			bigEnd = i
		}
	}
	if len(got) < 3 || smallAt < 0 || bigEnd < 0 || smallAt > bigEnd {
		t.Fatalf("%d frames; the small call's at %d, the big one's last part at %d", len(got), smallAt, bigEnd)
	}
}

// A connection that carried no call for a whole idle time closes; the next
// call opens another.
func TestMuxIdleClose(t *testing.T) {
	p := startMuxPeer(t, echo, 1<<20)
	d := &net.Dialer{Timeout: time.Second}
	c := NewClient(p.addr, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", p.addr) }, 50*time.Millisecond, 0)
	t.Cleanup(c.Close)
	resp := fasthttp.AcquireResponse()
	for i := 0; i < 5; i++ { // busy: the connection stays
		if err := c.Do(context.Background(), newReq(i, []byte("x")), resp); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := p.conns.Load(); n != 1 {
		t.Fatalf("%d connections while busy, want 1", n)
	}
	time.Sleep(250 * time.Millisecond) // idle for more than two idle times
	if err := c.Do(context.Background(), newReq(9, []byte("x")), resp); err != nil {
		t.Fatal(err)
	}
	if n := p.conns.Load(); n != 2 {
		t.Fatalf("%d connections after the idle time, want 2", n)
	}
}

// A callee that takes the connection and the call but then says nothing
// (its host gone without closing the connection) is sent a keepalive PING,
// and when that goes unanswered too the call fails, long before its own
// deadline, as one that may have reached the app.
func TestMuxKeepaliveSilentCallee(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	types := make(chan byte, 16) // the frame types the callee received
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fr := newFrameReader(c)
		if _, err := io.ReadFull(fr.br, make([]byte, len(MuxPreface))); err != nil {
			return
		}
		for {
			n, _, typ, err := fr.next()
			if err != nil || fr.skip(n) != nil {
				close(types)
				return
			}
			types <- typ &^ FlagMore
		}
	}()
	const keepalive = 50 * time.Millisecond
	d := &net.Dialer{Timeout: time.Second}
	addr := ln.Addr().String()
	c := NewClient(addr, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, time.Minute, keepalive)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	resp := fasthttp.AcquireResponse()
	err = c.Do(ctx, newReq(1, []byte("x")), resp)
	took := time.Since(start)
	if err == nil || ctx.Err() != nil || errors.Is(err, ErrNotSent) || !strings.Contains(err.Error(), "keepalive PING") {
		t.Fatalf("after %v: %v (context: %v); want the connection given up for an unanswered keepalive PING, the call as sent", took, err, ctx.Err())
	}
	var got []byte
	for typ := range types {
		got = append(got, typ)
	}
	if len(got) != 2 || got[0] != FrameRequest || got[1] != FramePing {
		t.Fatalf("the callee received frames of types %v, want the request (%d) and one PING (%d)", got, FrameRequest, FramePing)
	}
	t.Logf("the call failed %v after it was sent (keepalive %v)", took, keepalive)
}

// A callee that answers PINGs keeps its connection however long a call
// takes: a call of twenty keepalive periods is answered, and the calls
// after it go on the same connection.
func TestMuxKeepaliveSlowCall(t *testing.T) {
	const keepalive = 25 * time.Millisecond
	p := startMuxPeer(t, func(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, a net.Addr, err error) {
		if string(req.Header.Peek("X-Id")) == "1" {
			time.Sleep(20 * keepalive)
		}
		echo(ctx, req, resp, a, err)
	}, 1<<20)
	d := &net.Dialer{Timeout: time.Second}
	c := NewClient(p.addr, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", p.addr) }, time.Minute, keepalive)
	t.Cleanup(c.Close)
	for i := 1; i <= 3; i++ {
		resp := fasthttp.AcquireResponse()
		if err := c.Do(context.Background(), newReq(i, []byte("x")), resp); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got := string(resp.Header.Peek("X-Id")); got != strconv.Itoa(i) {
			t.Fatalf("call %d: answer of %q", i, got)
		}
	}
	if n := p.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}
