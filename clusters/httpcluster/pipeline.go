package httpcluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// pipeClient pipelines HTTP/1.1 requests to one address over up to n
// connections, in batches. A caller serializes its request into the
// connection's write buffer itself. A connection has at most one batch on
// the wire: the caller that finds it with nothing on the wire yields once
// and then writes everything queued meanwhile in one write, and requests
// queued while a batch is on the wire are written together by the reader
// when the last answer of that batch is read. So the requests that can be
// held up by a slow answer are the ones written in its batch, and the
// ones queued behind it (which leave for another connection when they
// have waited stallAfter unsent). One reader per connection reads the
// answers in order and hands each to its caller: a request crosses one
// goroutine, the reader, on its way back.
//
// A request joins a busy connection only while the app answers its
// pipelined requests quickly: the connection's calls times the app's time
// per answer on it (a moving average of each batch's time over its size)
// must stay within joinBudget. Otherwise it goes around (a keep-alive
// connection of its own, as without pipelining), so that an app that
// spends real time on each request keeps its concurrency.
type pipeClient struct {
	addr string
	dial func(string) (net.Conn, error)
	// around takes the requests that find every connection stalled: an
	// answer waited on for stallAfter with nothing answered meanwhile.
	around     doer
	stallAfter time.Duration

	// joinBudget (ns, half of stallAfter) bounds the wait a request may
	// take on by joining a busy connection: the calls queued there times
	// the app's time per answer on it.
	joinBudget int64

	// offUntil (unix nanos): until then requests go around; see backOff.
	offUntil atomic.Int64

	// nStats counts what the client does (unregistered counters until
	// countInto).
	nStats pipeStats

	rr     atomic.Uint32
	slots  []atomic.Pointer[pipeConn] // nil: not dialed (or failed)
	dialMu []sync.Mutex               // one dial per slot at a time
	closed atomic.Bool
}

// errPipelineClosedByApp fails the requests queued behind an answer that
// said "Connection: close": the app does not read them (RFC 9112 9.6).
var errPipelineClosedByApp = errors.New("the app closed the connection before answering (Connection: close)")

// errPipeNotSent is a request that found its connection failed before it
// was queued.
var errPipeNotSent = errors.New("the connection to the app failed before the request was sent")

// errPipeIdleClosed is a request sent on a connection the app closed while
// it was idle: it was never read.
var errPipeIdleClosed = errors.New("the app closed the idle connection")

// pipeMaxPending is how many requests may wait for their answers on one
// connection; past it a request fails with ErrPipelineOverflow.
const pipeMaxPending = 1024

// newPipeClient pipelines over n connections; around (nil: none) takes the
// requests that find every connection stalled for stallAfter (0: never).
func newPipeClient(addr string, n int, dial func(string) (net.Conn, error), around doer, stallAfter time.Duration) *pipeClient {
	if n < 1 {
		n = 1
	}
	if around == nil {
		stallAfter = 0
	}
	return &pipeClient{addr: addr, dial: dial, around: around, stallAfter: stallAfter, joinBudget: int64(stallAfter / 2),
		slots: make([]atomic.Pointer[pipeConn], n), dialMu: make([]sync.Mutex, n),
		nStats: pipeStats{pipelined: new(stats.Counter), around: new(stats.Counter), backoffs: new(stats.Counter)}}
}

// errPipesStalled sends a request around the pipelined connections.
var errPipesStalled = errors.New("every pipelined connection is busy or waiting on a slow answer")

// pipeSvcStart is the time per answer a new connection assumes until the
// app's answers on it tell.
const pipeSvcStart = 100 * time.Microsecond

// pipeStats are the client's counters.
type pipeStats struct {
	pipelined, around, backoffs *stats.Counter
}

// countInto counts the client's requests and back-offs in reg, labelled
// with the app id and the cluster's name. Call it before the first request.
func (cl *pipeClient) countInto(reg *stats.Registry, appID, cluster string) {
	reqs := reg.Counter("app_pipeline_requests_total",
		"Requests through the pipelining client to an HTTP app: way=pipelined when queued on a pipelined connection, way=around when sent on a connection of their own (one sent back from the pipeline and then around counts in both).",
		"app_id", "cluster", "way")
	backoffs := reg.Counter("app_pipeline_backoffs_total",
		"Times the app closed a pipelined connection after fewer than four answers and requests went around for 10 s.",
		"app_id", "cluster")
	cl.nStats = pipeStats{pipelined: reqs.With(appID, cluster, "pipelined"), around: reqs.With(appID, cluster, "around"),
		backoffs: backoffs.With(appID, cluster)}
}

// sendAround sends req on a connection of its own (timeout 0: none).
func (cl *pipeClient) sendAround(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	cl.nStats.around.Inc()
	if timeout <= 0 {
		return cl.around.Do(req, resp)
	}
	return cl.around.DoTimeout(req, resp, timeout)
}

// pipeCall is a request waiting for its answer.
type pipeCall struct {
	resp *fasthttp.Response
	head bool // HEAD: the answer has no body
	// state: 0 waiting, 1 the reader is reading the answer into resp, 2 the
	// caller gave up (the reader reads the answer into a scratch response)
	state atomic.Int32
	done  chan error
	timer *time.Timer
	seq   uint64 // its place among the calls queued on its connection
}

// arm starts the call's timer.
func (c *pipeCall) arm(d time.Duration) *time.Timer {
	if c.timer == nil {
		c.timer = time.NewTimer(d)
	} else {
		c.timer.Reset(d)
	}
	return c.timer
}

var pipeCallPool = sync.Pool{New: func() any { return &pipeCall{done: make(chan error, 1)} }}

// recycle returns a call whose answer was taken to the pool.
func (c *pipeCall) recycle() {
	c.resp = nil
	pipeCallPool.Put(c)
}

// pipeConn is one pipelined connection.
type pipeConn struct {
	cl   *pipeClient
	slot int
	nc   net.Conn
	br   *bufio.Reader

	mu      sync.Mutex
	buf     []byte      // requests not yet written
	pending bool        // a flusher is about to write buf
	queue   []*pipeCall // queue[head:]: the batch on the wire, then the calls in buf
	head    int
	err     error // set once: the connection is done
	// enq, sent and answered count the calls queued, written and answered:
	// sent-answered are on the wire, enq-sent wait in buf. idleSince is
	// answered when the queue last went from empty to not; a failure with
	// no answer read since then is the app closing an idle connection, the
	// requests on it unread.
	enq, sent, answered uint64
	idleSince           uint64
	batchAt             int64  // unix nanos: when the batch on the wire was written
	batchN              uint64 // how many calls it carries
	// waiting is how many calls are queued, progress (unix nanos) when the
	// last answer was read or the queue last became busy, svc the app's
	// time per answer (ns: a moving average of each batch's time over its
	// size, written by the reader): read without mu to pick a connection.
	waiting  atomic.Int32
	progress atomic.Int64
	svc      atomic.Int64
	// joining counts the callers that picked this connection and have not
	// queued their call yet (see reserve).
	joining atomic.Int32

	wmu        sync.Mutex
	spare      []byte
	wdlRefresh time.Time // when the write deadline is next moved on
}

func (cl *pipeClient) Do(req *fasthttp.Request, resp *fasthttp.Response) error {
	return cl.DoTimeout(req, resp, 0)
}

// DoTimeout sends req on one of the connections and waits up to timeout
// (0: for ever) for its answer. req is written as its header says (request
// URI and Host as the cluster's rewrite set them) followed by its body.
func (cl *pipeClient) DoTimeout(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	body := req.Body()
	req.Header.SetContentLength(len(body))
	var start time.Time
	if timeout > 0 && cl.around != nil {
		start = time.Now()
	}
	for attempt := 0; ; attempt++ {
		pc, err := cl.conn()
		if err == errPipesStalled {
			return cl.sendAround(req, resp, timeout)
		}
		if err != nil {
			return err
		}
		if attempt == 0 {
			cl.nStats.pipelined.Inc()
		}
		err = pc.do(req, body, resp, timeout)
		// A request never sent (its connection had failed, or it waited
		// unsent behind a slow answer), or one the app did not read (queued
		// behind a "Connection: close" answer, or on an idle connection
		// the app closed) goes again, around the pipelined connections
		// when there is a way around. One written on a connection that
		// failed before any of its answer came (the app closing an idle
		// connection, or a connection that broke) goes again only if it is
		// idempotent (RFC 9112 9.3.1): the app may have acted on it.
		retry := errors.Is(err, errPipelineClosedByApp) || errors.Is(err, errPipeNotSent) ||
			(errors.Is(err, errPipeUnanswered) && isIdempotent(&req.Header))
		if !retry || attempt == 2 {
			return err
		}
		if cl.around != nil {
			if timeout > 0 {
				if timeout -= time.Since(start); timeout <= 0 {
					return fasthttp.ErrTimeout
				}
			}
			return cl.sendAround(req, resp, timeout)
		}
	}
}

// conn returns a live connection, dialing one when the slot it falls on
// has none: an idle one if there is one, else a busy one the request may
// join. With stallAfter set, a busy connection is joined only while its
// calls times the app's time per answer stay within the join budget and
// an answer was read (or the queue became busy) within stallAfter; when
// none may be joined, errPipesStalled. The connection returned holds a
// place for the caller's call (reserve): the caller's do releases it.
func (cl *pipeClient) conn() (*pipeConn, error) {
	if cl.closed.Load() {
		return nil, fasthttp.ErrConnectionClosed
	}
	if off := cl.offUntil.Load(); off != 0 && time.Now().UnixNano() < off {
		return nil, errPipesStalled
	}
	n := len(cl.slots)
	i := int(cl.rr.Add(1)) % n
	var join *pipeConn
	var now int64
	for k := range n {
		j := (i + k) % n
		pc := cl.slots[j].Load()
		if pc == nil {
			return cl.dialSlot(j)
		}
		w := pc.queued()
		if w == 0 && pc.reserve(true, 0) {
			if cl.stallAfter > 0 {
				pc.progress.Store(time.Now().UnixNano()) // its queue is becoming busy
			}
			return pc, nil
		}
		if join != nil {
			continue
		}
		if cl.stallAfter > 0 {
			if w*pc.svc.Load() > cl.joinBudget {
				continue
			}
			if now == 0 {
				now = time.Now().UnixNano()
			}
			if time.Duration(now-pc.progress.Load()) >= cl.stallAfter {
				continue
			}
		}
		join = pc
	}
	if join != nil && join.reserve(false, cl.joinBudget) { // 0 without stallAfter: no budget
		return join, nil
	}
	return nil, errPipesStalled
}

// queued is how many calls are queued on pc or about to be.
func (pc *pipeConn) queued() int64 { return int64(pc.waiting.Load()) + int64(pc.joining.Load()) }

// reserve holds a place on pc for a caller about to queue a call (its do
// releases it), so that callers arriving together count each other: with
// idle, only if none is queued or held; with budget > 0, only while the
// calls queued or held, times the app's time per answer, stay within it.
// Without it a burst of callers all read the same count and all joined one
// connection, past the budget.
func (pc *pipeConn) reserve(idle bool, budget int64) bool {
	for {
		r := pc.joining.Load()
		w := int64(pc.waiting.Load()) + int64(r)
		if idle && w != 0 {
			return false
		}
		if budget > 0 && w*pc.svc.Load() > budget {
			return false
		}
		if pc.joining.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// dialSlot dials slot i's connection (unless another caller just did).
// With a way around, a caller that finds the slot being dialed goes
// around rather than wait for the dial.
func (cl *pipeClient) dialSlot(i int) (*pipeConn, error) {
	if cl.around == nil {
		cl.dialMu[i].Lock()
	} else if !cl.dialMu[i].TryLock() {
		return nil, errPipesStalled
	}
	defer cl.dialMu[i].Unlock()
	if pc := cl.slots[i].Load(); pc != nil {
		pc.joining.Add(1)
		return pc, nil // dialed by the caller we waited for
	}
	nc, err := cl.dial(cl.addr)
	if err != nil {
		return nil, err
	}
	pc := &pipeConn{cl: cl, slot: i, nc: nc, br: bufio.NewReaderSize(nc, 16384),
		buf: make([]byte, 0, 4096), spare: make([]byte, 0, 4096)}
	pc.svc.Store(int64(pipeSvcStart))
	pc.joining.Store(1) // the caller's
	pc.progress.Store(time.Now().UnixNano())
	cl.slots[i].Store(pc)
	go pc.readLoop()
	if cl.closed.Load() {
		// Closed while dialing: Close may have missed this connection.
		pc.fail(fasthttp.ErrConnectionClosed)
		return nil, fasthttp.ErrConnectionClosed
	}
	return pc, nil
}

// pipeMinAnswers and pipeBackoff: an app that closes a pipelined
// connection after fewer answers than pipeMinAnswers (an HTTP/1.0 server,
// or one that closes every connection after its answer) gains nothing from
// pipelining, and each of its requests would wait for a dial: requests go
// around for pipeBackoff, then try the pipeline again.
const (
	pipeMinAnswers = 4
	pipeBackoff    = 10 * time.Second
)

// backOff sends requests around for pipeBackoff when the app closed pc
// after fewer than pipeMinAnswers answers. Called by pc's reader, which
// alone writes pc.answered.
func (cl *pipeClient) backOff(pc *pipeConn) {
	if pc.answered < pipeMinAnswers && cl.around != nil {
		cl.offUntil.Store(time.Now().Add(pipeBackoff).UnixNano())
		cl.nStats.backoffs.Inc()
	}
}

// drop empties pc's slot (if pc still holds it).
func (cl *pipeClient) drop(pc *pipeConn) { cl.slots[pc.slot].CompareAndSwap(pc, nil) }

// Close closes the connections with nothing queued; the others close once
// their last answer is read. No new request is sent.
func (cl *pipeClient) Close() {
	cl.closed.Store(true)
	for i := range cl.slots {
		pc := cl.slots[i].Swap(nil)
		if pc == nil {
			continue
		}
		pc.mu.Lock()
		idle := len(pc.queue) == pc.head
		pc.mu.Unlock()
		if idle {
			pc.fail(fasthttp.ErrConnectionClosed)
		}
	}
}

// do queues req on pc, releasing the place conn held for it, and waits for
// its answer.
func (pc *pipeConn) do(req *fasthttp.Request, body []byte, resp *fasthttp.Response, timeout time.Duration) error {
	call := pipeCallPool.Get().(*pipeCall)
	call.resp = resp
	call.head = req.Header.IsHead()
	call.state.Store(0)
	pc.mu.Lock()
	if pc.err != nil {
		err := pc.err
		pc.joining.Add(-1)
		pc.mu.Unlock()
		pc.cl.drop(pc) // so that the next try dials (fail may not have yet)
		pipeCallPool.Put(call)
		return fmt.Errorf("%w: %v", errPipeNotSent, err) // DoTimeout goes again
	}
	if len(pc.queue)-pc.head >= pipeMaxPending {
		pc.joining.Add(-1)
		pc.mu.Unlock()
		pipeCallPool.Put(call)
		return fasthttp.ErrPipelineOverflow
	}
	// fasthttp's AppendBytes of a header appends to what it is given.
	pc.buf = req.Header.AppendBytes(pc.buf)
	pc.buf = append(pc.buf, body...)
	if len(pc.queue) == pc.head {
		pc.idleSince = pc.answered
		if pc.cl.stallAfter > 0 {
			pc.progress.Store(time.Now().UnixNano())
		}
	}
	pc.waiting.Add(1)
	pc.joining.Add(-1) // counted in waiting now
	if pc.head > 0 && len(pc.queue) == cap(pc.queue) {
		// Room at the front (the queue never drained): move down.
		n := copy(pc.queue, pc.queue[pc.head:])
		clear(pc.queue[n:])
		pc.queue, pc.head = pc.queue[:n], 0
	}
	call.seq = pc.enq
	pc.enq++
	pc.queue = append(pc.queue, call)
	// With nothing on the wire this caller writes; with a batch on the
	// wire the reader writes this one with the next batch.
	first, held := false, false
	if !pc.pending {
		if pc.sent == pc.answered {
			first, pc.pending = true, true
		} else {
			held = true
		}
	}
	pc.mu.Unlock()
	if first {
		// Requests made meanwhile by other goroutines join this write.
		runtime.Gosched()
		pc.flush()
	}
	return pc.wait(call, timeout, held)
}

// flush writes what is queued (batches leave in the order they were
// taken: the write lock is taken before the buffer).
func (pc *pipeConn) flush() {
	pc.wmu.Lock()
	pc.mu.Lock()
	out := pc.buf
	pc.buf = pc.spare[:0]
	pc.pending = false
	pc.batchN = pc.enq - pc.sent
	pc.sent = pc.enq
	pc.batchAt = time.Now().UnixNano()
	failed := pc.err != nil
	pc.mu.Unlock()
	var err error
	if len(out) > 0 && !failed {
		if now := time.Now(); now.After(pc.wdlRefresh) {
			_ = pc.nc.SetWriteDeadline(now.Add(writeStall))
			pc.wdlRefresh = now.Add(writeStall / 2)
		}
		_, err = pc.nc.Write(out)
	}
	if cap(out) > 1<<20 {
		out = make([]byte, 0, 4096) // a large body's buffer is not kept
	}
	pc.spare = out[:0]
	pc.wmu.Unlock()
	if err != nil {
		pc.fail(err)
	}
}

// writeStall is how long a write may wait for the app to read.
const writeStall = 10 * time.Second

// wait waits for the call's answer. A held call (queued behind the batch
// on the wire) that is still unsent after stallAfter leaves the
// connection, with every call queued behind that batch: they go again
// elsewhere.
func (pc *pipeConn) wait(call *pipeCall, timeout time.Duration, held bool) error {
	if stall := pc.cl.stallAfter; held && stall > 0 && (timeout <= 0 || timeout > stall) {
		t := call.arm(stall)
		select {
		case err := <-call.done:
			t.Stop()
			call.recycle()
			return err
		case <-t.C:
		}
		pc.evictUnsent(call)
		if timeout > 0 {
			timeout -= stall
		}
	}
	if timeout <= 0 {
		err := <-call.done
		call.recycle()
		return err
	}
	call.arm(timeout)
	select {
	case err := <-call.done:
		call.timer.Stop()
		call.recycle()
		return err
	case <-call.timer.C:
	}
	if call.state.CompareAndSwap(0, 2) {
		// The reader will read the answer into a scratch response and
		// drop it; the call is not reused.
		return fasthttp.ErrTimeout
	}
	// The answer is being read into resp and has not come whole in time.
	// An answer that is still not whole a grace period later closes the
	// connection (the calls behind it fail), so that an app that stalls in
	// the middle of an answer holds nobody for long past their timeout.
	call.timer.Reset(stallGrace)
	select {
	case err := <-call.done:
		call.timer.Stop()
		call.recycle()
		return err // it came whole after all
	case <-call.timer.C:
	}
	pc.fail(errStalledAnswer)
	<-call.done
	call.recycle()
	return fasthttp.ErrTimeout
}

// evictUnsent takes the calls waiting in buf off the connection, unless
// call was written meanwhile, and fails them as never sent: their callers
// send them again elsewhere.
func (pc *pipeConn) evictUnsent(call *pipeCall) {
	pc.mu.Lock()
	if pc.err != nil || call.seq < pc.sent {
		pc.mu.Unlock()
		return
	}
	k := int(pc.enq - pc.sent)
	n := len(pc.queue)
	calls := append([]*pipeCall(nil), pc.queue[n-k:]...)
	clear(pc.queue[n-k:])
	pc.queue = pc.queue[:n-k]
	if pc.head == len(pc.queue) {
		pc.queue, pc.head = pc.queue[:0], 0
	}
	pc.enq = pc.sent
	pc.buf = pc.buf[:0]
	pc.waiting.Add(int32(-k))
	pc.mu.Unlock()
	for _, c := range calls {
		if c.state.CompareAndSwap(0, 1) {
			c.done <- errPipeHeld
		}
	}
}

// errPipeHeld is a request that waited unsent behind a slow batch.
var errPipeHeld = fmt.Errorf("%w: held behind a slow answer", errPipeNotSent)

// stallGrace is how long an answer that has begun may go on past its
// caller's timeout before its connection is closed.
const stallGrace = 100 * time.Millisecond

// errStalledAnswer fails the calls queued behind an answer that stalled
// past its caller's timeout.
var errStalledAnswer = errors.New("the connection was closed: an answer ahead on it stalled past its timeout")

var scratchPool = sync.Pool{New: func() any { return new(fasthttp.Response) }}

// readLoop reads answers in order until the connection fails.
func (pc *pipeConn) readLoop() {
	for {
		if _, err := pc.br.Peek(1); err != nil {
			// No byte of an answer came: on a connection idle until the
			// requests now queued were sent, the app closed it unread.
			pc.mu.Lock()
			idle := pc.answered == pc.idleSince
			pc.mu.Unlock()
			if idle {
				err = fmt.Errorf("%w (%v)", errPipeIdleClosed, err)
			}
			if errors.Is(err, io.EOF) {
				pc.cl.backOff(pc)
			}
			pc.fail(err)
			return
		}
		pc.mu.Lock()
		if pc.sent == pc.answered { // nothing on the wire
			pc.mu.Unlock()
			pc.fail(errors.New("the app sent an answer to no request"))
			return
		}
		call := pc.queue[pc.head]
		// Taken under mu, so that fail, which takes the queue under it,
		// leaves this call to the reader.
		owned := call.state.CompareAndSwap(0, 1)
		pc.mu.Unlock()
		resp := call.resp
		if !owned {
			resp = scratchPool.Get().(*fasthttp.Response) // its caller gave up
		}
		resp.SkipBody = call.head
		err := resp.Read(pc.br)
		closeAfter := err == nil && resp.ConnectionClose()
		resp.SkipBody = false
		if !owned {
			resp.Reset()
			scratchPool.Put(resp)
		}
		now := time.Now().UnixNano()
		pc.mu.Lock()
		if pc.head < len(pc.queue) && pc.queue[pc.head] == call { // else fail took the queue
			pc.queue[pc.head] = nil
			if pc.head++; pc.head == len(pc.queue) {
				pc.queue, pc.head = pc.queue[:0], 0
			}
			pc.waiting.Add(-1)
		}
		pc.answered++
		var took int64 // the batch's time per answer, once it is all answered
		if pc.sent == pc.answered && pc.batchN > 0 {
			took = (now - pc.batchAt) / int64(pc.batchN)
			pc.batchN = 0
		}
		// The batch is answered: the calls queued meanwhile leave now.
		next := err == nil && !closeAfter && pc.err == nil && !pc.pending &&
			pc.sent == pc.answered && pc.enq > pc.sent
		pc.pending = pc.pending || next
		pc.mu.Unlock()
		if took > 0 {
			svc := pc.svc.Load()
			pc.svc.Store(svc + (took-svc)/4)
		}
		pc.progress.Store(now)
		if next {
			pc.flush()
		}
		if owned {
			call.done <- err
		}
		if err != nil {
			pc.fail(err)
			return
		}
		if closeAfter {
			pc.cl.backOff(pc)
			pc.fail(errPipelineClosedByApp)
			return
		}
		if pc.cl.closed.Load() {
			pc.mu.Lock()
			drained := len(pc.queue) == pc.head
			pc.mu.Unlock()
			if drained {
				pc.fail(fasthttp.ErrConnectionClosed)
				return
			}
		}
	}
}

// fail closes the connection and fails every call still queued on it.
func (pc *pipeConn) fail(err error) {
	pc.mu.Lock()
	if pc.err != nil {
		pc.mu.Unlock()
		return
	}
	pc.err = err
	calls := pc.queue[pc.head:]
	unsent := len(calls) - int(pc.enq-pc.sent) // calls[unsent:] were never written
	pc.queue, pc.head = nil, 0
	pc.waiting.Store(0)
	pc.mu.Unlock()
	pc.cl.drop(pc)
	_ = pc.nc.Close()
	for i, call := range calls {
		if !call.state.CompareAndSwap(0, 1) {
			continue // the reader is reading its answer, or its caller gave up
		}
		if i >= unsent {
			call.done <- fmt.Errorf("%w: %w", errPipeNotSent, err)
		} else {
			call.done <- fmt.Errorf("%w: %w", errPipeUnanswered, err)
		}
	}
}

// errPipeUnanswered is a request written on a connection that failed
// before any of its answer was read: the app may have acted on it.
var errPipeUnanswered = errors.New("no answer came before the connection to the app failed")

// isIdempotent reports whether a request may be sent twice (RFC 9110 9.2.2).
func isIdempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsPut() || h.IsDelete() || h.IsOptions() || h.IsTrace()
}
