package httpcluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// countingConn counts the writes made on a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func plainDial(a string) (net.Conn, error) { return net.DialTimeout("tcp", a, time.Second) }

func pipeRequest(verb, path, body string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(verb)
	req.SetRequestURI(path) // as the cluster's rewrite leaves it: path and Host
	req.Header.SetHost("app")
	req.SetBodyString(body)
	return req
}

// TestPipeBatches: requests made at once leave in fewer writes than there
// are requests, and every caller gets its own answer.
func TestPipeBatches(t *testing.T) {
	a := startApp(t, nil) // echoes the body
	var writes atomic.Int32
	cl := newPipeClient(a.addr, 1, func(addr string) (net.Conn, error) {
		c, err := plainDial(addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &writes}, nil
	}, nil, 0)
	t.Cleanup(cl.Close)
	const n = 64
	postAtOnce(t, cl, n)
	if w := writes.Load(); w >= n {
		t.Errorf("%d requests took %d writes: not batched", n, w)
	}
	if o := a.opened.Load(); o != 1 {
		t.Errorf("%d connections opened, want 1", o)
	}
}

// atOnce runs call(0) .. call(n-1) in goroutines released together and
// fails the test for each error.
func atOnce(t *testing.T, n int, call func(i int) error) {
	t.Helper()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := call(i); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// postAtOnce sends n POSTs with bodies call-0 .. call-<n-1> at once and
// fails the test for each that is not answered with its own body.
func postAtOnce(t *testing.T, cl *pipeClient, n int) {
	t.Helper()
	atOnce(t, n, func(i int) error {
		want := fmt.Sprint("call-", i)
		resp := fasthttp.AcquireResponse()
		err := cl.DoTimeout(pipeRequest("POST", "/m", want), resp, 5*time.Second)
		if err == nil && string(resp.Body()) != want {
			err = fmt.Errorf("call %d got %q", i, resp.Body())
		}
		return err
	})
}

// actLog counts the requests an app acted on, by body.
type actLog struct {
	mu     sync.Mutex
	bodies map[string]int
}

// read reads one request and counts its body as acted on.
func (a *actLog) read(br *bufio.Reader) ([]byte, error) {
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bodies == nil {
		a.bodies = map[string]int{}
	}
	a.bodies[string(body)]++
	return body, nil
}

// onceEach fails the test unless the app acted on each of the bodies
// call-0 .. call-<n-1> exactly once.
func (a *actLog) onceEach(t *testing.T, n int) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range n {
		if k := a.bodies[fmt.Sprint("call-", i)]; k != 1 {
			t.Errorf("the app acted on call-%d %d times", i, k)
		}
	}
}

// rawPipeApp serves each accepted connection with serve(conn, index).
func rawPipeApp(t *testing.T, serve func(c net.Conn, br *bufio.Reader, i int)) (string, *atomic.Int32) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(conns.Add(1)) - 1
			go func() {
				defer c.Close()
				serve(c, bufio.NewReader(c), i)
			}()
		}
	}()
	return ln.Addr().String(), &conns
}

// readReq reads one request (no body expected beyond Content-Length).
func readReq(br *bufio.Reader) (*http.Request, error) {
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(r.Body)
	return r, nil
}

// TestPipeResendAfterConnectionClose: a request queued behind an answer
// that says "Connection: close" is not read by the app; it goes again on a
// new connection and is answered there (a POST too: it was never read).
func TestPipeResendAfterConnectionClose(t *testing.T) {
	gotFirst, queued := make(chan struct{}), make(chan struct{})
	addr, conns := rawPipeApp(t, func(c net.Conn, br *bufio.Reader, i int) {
		if i == 0 {
			if _, err := readReq(br); err != nil {
				return
			}
			close(gotFirst)
			<-queued // the second request waits on this connection
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfirst"))
			return
		}
		for {
			r, err := readReq(br)
			if err != nil {
				return
			}
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(r.URL.Path), r.URL.Path)
		}
	})
	cl := newPipeClient(addr, 1, plainDial, nil, 0)
	t.Cleanup(cl.Close)
	type result struct {
		body string
		err  error
	}
	call := func(verb, path string) chan result {
		ch := make(chan result, 1)
		go func() {
			resp := fasthttp.AcquireResponse()
			err := cl.DoTimeout(pipeRequest(verb, path, "x"), resp, 5*time.Second)
			ch <- result{string(resp.Body()), err}
		}()
		return ch
	}
	first := call("GET", "/one")
	select {
	case <-gotFirst:
	case <-time.After(5 * time.Second):
		t.Fatal("the app never got the first request")
	}
	second := call("POST", "/two")
	waitFor(t, "the second request queued on the connection", func() bool { return cl.slots[0].Load().waiting.Load() == 2 })
	close(queued)
	if r := <-first; r.err != nil || r.body != "first" {
		t.Fatalf("first: %q %v", r.body, r.err)
	}
	if r := <-second; r.err != nil || r.body != "/two" {
		t.Fatalf("second, queued behind Connection: close: %q %v (want it sent again and answered)", r.body, r.err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// waitFor polls cond every millisecond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestPipeBatchesBehindConnectionClose: the app answers every third
// request on a connection with "Connection: close" and reads nothing
// more. Of 64 POSTs sent at once, batched, the ones written or queued
// behind such an answer go again on new connections: every caller gets
// its own answer, and the app acts on each request exactly once (one
// that came back once goes around, on a connection of its own).
func TestPipeBatchesBehindConnectionClose(t *testing.T) {
	var acted actLog
	addr, conns := rawPipeApp(t, func(c net.Conn, br *bufio.Reader, _ int) {
		for n := 1; ; n++ {
			body, err := acted.read(br)
			if err != nil {
				return
			}
			if n%3 == 0 {
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
				return
			}
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	cl := newPipeClient(addr, 1, plainDial, &fasthttp.HostClient{Addr: addr, Dial: plainDial}, time.Second)
	t.Cleanup(cl.Close)
	const n = 64
	postAtOnce(t, cl, n)
	acted.onceEach(t, n)
	if c := conns.Load(); c < n/3 {
		t.Errorf("%d connections for %d requests closed every third: the closes were not seen", c, n)
	}
}

// TestPipeIdleCloseRetriesIdempotentOnly: the app closes a connection after
// reading a request, without answering (what a keep-alive timeout that
// crosses a request looks like). A GET goes again on a new connection; a
// POST, which the app may have acted on, is not sent twice.
func TestPipeIdleCloseRetriesIdempotentOnly(t *testing.T) {
	for _, tc := range []struct {
		verb      string
		wantErr   bool
		wantConns int32
	}{{"GET", false, 2}, {"POST", true, 1}} {
		t.Run(tc.verb, func(t *testing.T) {
			var requests atomic.Int32
			addr, conns := rawPipeApp(t, func(c net.Conn, br *bufio.Reader, i int) {
				for {
					if _, err := readReq(br); err != nil {
						return
					}
					requests.Add(1)
					if i == 0 {
						return // closed unanswered
					}
					_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
				}
			})
			cl := newPipeClient(addr, 1, plainDial, nil, 0)
			t.Cleanup(cl.Close)
			resp := fasthttp.AcquireResponse()
			err := cl.DoTimeout(pipeRequest(tc.verb, "/m", "x"), resp, 5*time.Second)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("answered %q; want an error", resp.Body())
				}
				if !errors.Is(err, errPipeIdleClosed) {
					t.Errorf("error %v, want errPipeIdleClosed", err)
				}
			} else if err != nil || string(resp.Body()) != "ok" {
				t.Fatalf("%q %v; want the request sent again and answered", resp.Body(), err)
			}
			if n := conns.Load(); n != tc.wantConns {
				t.Errorf("%d connections, want %d", n, tc.wantConns)
			}
			if n := requests.Load(); n != tc.wantConns {
				t.Errorf("the app read %d requests, want %d", n, tc.wantConns)
			}
		})
	}
}

// TestPipeBrokenBatchRetriesIdempotentOnly: two requests leave in one
// batch; the app answers the first and closes the connection without
// saying so. The second, which the app may have acted on, goes again only
// if its verb is idempotent.
func TestPipeBrokenBatchRetriesIdempotentOnly(t *testing.T) {
	for _, tc := range []struct {
		verb    string
		wantErr bool
	}{{"GET", false}, {"POST", true}} {
		t.Run(tc.verb, func(t *testing.T) {
			var requests atomic.Int32
			addr, _ := rawPipeApp(t, func(c net.Conn, br *bufio.Reader, i int) {
				for n := 0; ; n++ {
					if _, err := readReq(br); err != nil {
						return
					}
					requests.Add(1)
					if i == 0 && n == 1 {
						return // read, then closed unanswered
					}
					_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
				}
			})
			cl := newPipeClient(addr, 1, plainDial, nil, 0)
			t.Cleanup(cl.Close)
			pc, err := cl.conn()
			if err != nil {
				t.Fatal(err)
			}
			pc.joining.Add(-1) // the place conn held: no call of this caller follows
			// A flush is pending: both calls join it (as calls that arrive
			// while its caller yields do), and the test writes the batch.
			pc.mu.Lock()
			pc.pending = true
			pc.mu.Unlock()
			res := make([]chan error, 2)
			for k, verb := range []string{"GET", tc.verb} {
				res[k] = make(chan error, 1)
				go func() {
					resp := fasthttp.AcquireResponse()
					err := cl.DoTimeout(pipeRequest(verb, "/m", "x"), resp, 5*time.Second)
					if err == nil && string(resp.Body()) != "ok" {
						err = fmt.Errorf("body %q", resp.Body())
					}
					res[k] <- err
				}()
				waitFor(t, "the call queued", func() bool { return pc.waiting.Load() == int32(k+1) })
			}
			pc.flush()
			if err := <-res[0]; err != nil {
				t.Fatalf("first: %v", err)
			}
			err = <-res[1]
			if tc.wantErr {
				if !errors.Is(err, errPipeUnanswered) {
					t.Fatalf("second: %v, want errPipeUnanswered", err)
				}
				if n := requests.Load(); n != 2 {
					t.Errorf("the app read %d requests, want 2 (the POST not sent again)", n)
				}
			} else if err != nil {
				t.Fatalf("second: %v, want it sent again and answered", err)
			}
		})
	}
}

// TestPipeTimeoutKeepsOrder: a request that timed out is still answered on
// its connection later; that answer is dropped (the caller's response is
// its own again) and the next request gets its own answer.
func TestPipeTimeoutKeepsOrder(t *testing.T) {
	a := startApp(t, func(ctx *fasthttp.RequestCtx, _ int32) {
		if string(ctx.Request.Body()) == "slow" {
			time.Sleep(300 * time.Millisecond) // a slow app, not synchronisation
		}
		ctx.SetBody(ctx.Request.Body())
	})
	cl := newPipeClient(a.addr, 1, plainDial, nil, 0)
	t.Cleanup(cl.Close)
	first := fasthttp.AcquireResponse()
	if err := cl.DoTimeout(pipeRequest("POST", "/m", "slow"), first, 50*time.Millisecond); !errors.Is(err, fasthttp.ErrTimeout) {
		t.Fatalf("slow request: %v, want ErrTimeout", err)
	}
	for _, body := range []string{"fast", "faster"} {
		resp := fasthttp.AcquireResponse()
		if err := cl.DoTimeout(pipeRequest("POST", "/m", body), resp, 5*time.Second); err != nil || string(resp.Body()) != body {
			t.Fatalf("after the timeout: %q %v, want %q", resp.Body(), err, body)
		}
	}
	if len(first.Body()) != 0 {
		t.Errorf("the late answer was written into the response of the call that gave up: %q", first.Body())
	}
	if o := a.opened.Load(); o != 1 {
		t.Errorf("%d connections, want 1", o)
	}
}

// TestPipeHead: the answer to a HEAD carries a Content-Length but no body;
// the request after it on the same connection gets its own answer.
func TestPipeHead(t *testing.T) {
	addr, _ := rawPipeApp(t, func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			r, err := readReq(br)
			if err != nil {
				return
			}
			if r.Method == "HEAD" {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
			} else {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
			}
		}
	})
	cl := newPipeClient(addr, 1, plainDial, nil, 0)
	t.Cleanup(cl.Close)
	resp := fasthttp.AcquireResponse()
	if err := cl.DoTimeout(pipeRequest("HEAD", "/m", ""), resp, 2*time.Second); err != nil {
		t.Fatalf("HEAD: %v", err)
	}
	if resp.Header.ContentLength() != 5 || len(resp.Body()) != 0 {
		t.Fatalf("HEAD: length %d, body %q", resp.Header.ContentLength(), resp.Body())
	}
	resp.Reset()
	if err := cl.DoTimeout(pipeRequest("GET", "/m", ""), resp, 2*time.Second); err != nil || string(resp.Body()) != "hello" {
		t.Fatalf("GET after HEAD: %q %v", resp.Body(), err)
	}
}

// TestPipeCloseLetsCallsFinish: Close fails no call in flight; later calls
// fail at once.
func TestPipeCloseLetsCallsFinish(t *testing.T) {
	g := newGate()
	a := startApp(t, func(ctx *fasthttp.RequestCtx, n int32) {
		g.wait(n)
		ctx.SetBodyString("done")
	})
	cl := newPipeClient(a.addr, 1, plainDial, nil, 0)
	res := make(chan error, 1)
	go func() {
		resp := fasthttp.AcquireResponse()
		err := cl.DoTimeout(pipeRequest("GET", "/m", ""), resp, 5*time.Second)
		if err == nil && string(resp.Body()) != "done" {
			err = fmt.Errorf("body %q", resp.Body())
		}
		res <- err
	}()
	g.waitEntered(t)
	cl.Close()
	g.open()
	if err := <-res; err != nil {
		t.Fatalf("the call in flight: %v", err)
	}
	if err := cl.DoTimeout(pipeRequest("GET", "/m", ""), fasthttp.AcquireResponse(), time.Second); !errors.Is(err, fasthttp.ErrConnectionClosed) {
		t.Fatalf("a call after Close: %v", err)
	}
}

// TestPipeStalledAnswer: an app that starts an answer and stops in the
// middle holds its caller no longer than the timeout; the connection goes,
// and the next request is answered on a new one.
func TestPipeStalledAnswer(t *testing.T) {
	addr, conns := rawPipeApp(t, func(c net.Conn, br *bufio.Reader, i int) {
		for {
			if _, err := readReq(br); err != nil {
				return
			}
			if i == 0 {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"))
				continue // the rest never comes
			}
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		}
	})
	cl := newPipeClient(addr, 1, plainDial, nil, 0)
	t.Cleanup(cl.Close)
	res := make(chan error, 1)
	go func() {
		res <- cl.DoTimeout(pipeRequest("GET", "/m", ""), fasthttp.AcquireResponse(), 100*time.Millisecond)
	}()
	select {
	case err := <-res:
		if !errors.Is(err, fasthttp.ErrTimeout) {
			t.Fatalf("stalled answer: %v, want ErrTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a caller whose answer stalled midway was held past its timeout")
	}
	resp := fasthttp.AcquireResponse()
	if err := cl.DoTimeout(pipeRequest("GET", "/m", ""), resp, 2*time.Second); err != nil || string(resp.Body()) != "ok" {
		t.Fatalf("the next request: %q %v", resp.Body(), err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestPipeStallGoesAround: while a slow answer holds up its connection,
// new requests go around it on a connection of their own; once it is
// answered, requests are pipelined on that connection again.
func TestPipeStallGoesAround(t *testing.T) {
	slowIn := make(chan struct{})
	var mu sync.Mutex
	from := map[string]string{} // path -> the caller's address
	a := startApp(t, func(ctx *fasthttp.RequestCtx, _ int32) {
		mu.Lock()
		from[string(ctx.Path())] = ctx.RemoteAddr().String()
		mu.Unlock()
		if string(ctx.Path()) == "/slow" {
			close(slowIn)
			time.Sleep(time.Second)
		}
		ctx.SetBodyString("ok")
	})
	around := &fasthttp.HostClient{Addr: a.addr, Dial: plainDial}
	cl := newPipeClient(a.addr, 1, plainDial, around, 20*time.Millisecond)
	t.Cleanup(cl.Close)
	slowDone := make(chan error, 1)
	go func() {
		resp := fasthttp.AcquireResponse()
		slowDone <- cl.DoTimeout(pipeRequest("GET", "/slow", ""), resp, 5*time.Second)
	}()
	<-slowIn
	time.Sleep(50 * time.Millisecond)
	for i := range 10 {
		resp := fasthttp.AcquireResponse()
		if err := cl.DoTimeout(pipeRequest("GET", fmt.Sprint("/fast", i), ""), resp, 5*time.Second); err != nil {
			t.Fatalf("fast call %d: %v", i, err)
		}
		select {
		case <-slowDone:
			t.Fatalf("fast call %d waited for the slow answer ahead of it", i)
		default:
		}
	}
	if err := <-slowDone; err != nil {
		t.Fatalf("slow call: %v", err)
	}
	// Idle for longer than the stall time: an idle connection is not a
	// stalled one.
	time.Sleep(50 * time.Millisecond)
	resp := fasthttp.AcquireResponse()
	if err := cl.DoTimeout(pipeRequest("GET", "/after", ""), resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if from["/fast0"] == from["/slow"] {
		t.Fatalf("the fast call went on the stalled connection %s", from["/slow"])
	}
	if from["/after"] != from["/slow"] {
		t.Fatalf("after the slow answer a call went on %s, not the pipelined connection %s", from["/after"], from["/slow"])
	}
}

// TestPipeHTTP10AppGoesAround: an app that answers in HTTP/1.0 and closes
// every connection after its answer gains nothing from pipelining: once it
// closed a pipelined connection after one answer, requests go around on
// connections of their own, and every one is answered.
func TestPipeHTTP10AppGoesAround(t *testing.T) {
	var acted actLog
	addr, conns := rawPipeApp(t, func(c net.Conn, br *bufio.Reader, _ int) {
		body, err := acted.read(br)
		if err != nil {
			return
		}
		_, _ = fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	})
	cl := newPipeClient(addr, 2, plainDial, &fasthttp.HostClient{Addr: addr, Dial: plainDial}, DefaultPipelineStall)
	reg := stats.NewRegistry("dapr_")
	cl.countInto(reg, "orders", "app")
	t.Cleanup(cl.Close)
	const n = 64
	postAtOnce(t, cl, n)
	if cl.offUntil.Load() == 0 {
		t.Error("the pipeline was not left after the app closed its connection after one answer")
	}
	if b := cl.nStats.backoffs.Value(); b == 0 {
		t.Error("app_pipeline_backoffs_total did not count the back-off")
	}
	if a := cl.nStats.around.Value(); a == 0 {
		t.Error("app_pipeline_requests_total{way=around} counted nothing")
	}
	acted.onceEach(t, n)
	if c := conns.Load(); c != n {
		t.Errorf("%d connections for %d requests to an app that closes each after one answer", c, n)
	}
	if _, err := cl.conn(); !errors.Is(err, errPipesStalled) {
		t.Errorf("after the close, conn() gave a pipelined connection (err %v); want requests sent around", err)
	}
}

// TestPipeSlowAppKeepsConcurrency: an app that spends milliseconds on each
// request gets concurrent requests side by side, on connections of their
// own, not queued behind each other on the pipelined connection: one call
// waiting there times the app's time per answer is past the join budget.
func TestPipeSlowAppKeepsConcurrency(t *testing.T) {
	var inside, most atomic.Int32
	a := startApp(t, func(ctx *fasthttp.RequestCtx, _ int32) {
		k := inside.Add(1)
		for m := most.Load(); k > m && !most.CompareAndSwap(m, k); m = most.Load() {
		}
		time.Sleep(5 * time.Millisecond) // the app's work, not synchronisation
		inside.Add(-1)
		ctx.SetBodyString("ok")
	})
	cl := newPipeClient(a.addr, 1, plainDial, &fasthttp.HostClient{Addr: a.addr, Dial: plainDial}, DefaultPipelineStall)
	t.Cleanup(cl.Close)
	call := func() error {
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		if err := cl.DoTimeout(pipeRequest("GET", "/m", ""), resp, 5*time.Second); err != nil {
			return err
		}
		if string(resp.Body()) != "ok" {
			return fmt.Errorf("body %q", resp.Body())
		}
		return nil
	}
	for range 3 { // the connection learns the app's pace
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
	const n = 16
	atOnce(t, n, func(int) error { return call() })
	if m := most.Load(); m < n/2 {
		t.Errorf("at most %d of %d concurrent requests were in the app at once: they queued on the pipelined connection", m, n)
	}
}

// TestPipeCallersArrivingTogetherCountEachOther: callers that pick a
// connection at the same moment, before any of them has queued its call,
// count each other against the join budget: past it they go around instead
// of all taking the connection that looked idle to each of them.
func TestPipeCallersArrivingTogetherCountEachOther(t *testing.T) {
	a := startApp(t, nil)
	cl := newPipeClient(a.addr, 1, plainDial, &fasthttp.HostClient{Addr: a.addr, Dial: plainDial}, DefaultPipelineStall)
	t.Cleanup(cl.Close)
	first, err := cl.conn()
	if err != nil {
		t.Fatal(err)
	}
	// The app's time per answer: a caller may wait behind two calls, not
	// behind three.
	per := cl.joinBudget/3 + 1
	first.svc.Store(per)
	held := 1
	for k := 2; k <= 4; k++ {
		pc, err := cl.conn()
		switch {
		case k <= 3 && (err != nil || pc != first):
			t.Fatalf("caller %d: %v, want to join the connection (%d calls ahead × %v within the budget %v)", k, err, k-1, time.Duration(per), time.Duration(cl.joinBudget))
		case k == 4 && !errors.Is(err, errPipesStalled):
			t.Fatalf("caller 4: %v, want errPipesStalled: three calls ahead × %v are past the budget %v, counting the callers that have not queued yet", err, time.Duration(per), time.Duration(cl.joinBudget))
		}
		if err == nil {
			held++
		}
	}
	first.joining.Add(int32(-held)) // none of those callers queues a call
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := cl.DoTimeout(pipeRequest("GET", "/m", ""), resp, 5*time.Second); err != nil {
		t.Fatalf("a call after the places were given back: %v", err)
	}
	if n := first.queued(); n != 0 {
		t.Errorf("%d calls queued or held after the last answer, want 0", n)
	}
}

// BenchmarkPipeClient: parallel requests to a local app through the
// pipelining client, beside fasthttp's HostClient (one request per
// connection at a time). Allocations include none of the app's (it runs
// in this process too, so they are counted: compare the two).
func BenchmarkPipeClient(b *testing.B) {
	a := startApp(b, nil)
	for _, tc := range []struct {
		name string
		c    doer
	}{
		{"pipelined-2", newPipeClient(a.addr, 2, plainDial, &fasthttp.HostClient{Addr: a.addr, MaxConns: 1024}, DefaultPipelineStall)},
		{"hostclient", &fasthttp.HostClient{Addr: a.addr, MaxConns: 1024}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				req := pipeRequest("POST", "/m", "payload")
				resp := fasthttp.AcquireResponse()
				for pb.Next() {
					if err := tc.c.Do(req, resp); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
