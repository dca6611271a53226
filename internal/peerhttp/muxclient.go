package peerhttp

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/switchyard-proxy/switchyard/internal/keepalive"
)

// Client sends calls to one callee address over the multiplexed link: one
// connection at a time, made on first use and again after it fails, which
// every call in flight shares.
type Client struct {
	addr string
	dial func(ctx context.Context) (net.Conn, error)
	// idle closes a connection that carried no call for this long.
	idle time.Duration
	// keepalive: a connection whose calls wait and that received nothing
	// for this long sends a PING, and fails when nothing comes for another.
	keepalive time.Duration

	mu      sync.Mutex
	cur     *clientConn
	dialing chan struct{} // closed when the dial in progress ends
	closed  bool
}

// NewClient returns a client of addr; dial makes a connection (with the
// caller's connect timeout); idle is how long an unused connection stays;
// keepalive is how long calls wait on a silent connection before it is
// checked with a PING (and, unanswered as long again, given up). Zero turns
// either off.
func NewClient(addr string, dial func(ctx context.Context) (net.Conn, error), idle, keepalive time.Duration) *Client {
	return &Client{addr: addr, dial: dial, idle: idle, keepalive: keepalive}
}

// Close stops the client: later calls fail as not sent, and the connection
// closes once the calls in flight have their answers.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	cc := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cc == nil {
		return
	}
	cc.mu.Lock()
	cc.goaway = true // the reader closes after the last answer
	empty := len(cc.calls) == 0
	cc.mu.Unlock()
	if empty {
		cc.fail(errors.New("peer link: client closed"))
	}
}

// clientConn is one multiplexed connection of a client.
type clientConn struct {
	cl *Client
	c  net.Conn
	w  *frameWriter

	mu     sync.Mutex
	calls  map[uint32]*pending
	dead   error // set once: no new calls; every pending one is failed
	goaway bool  // the callee is closing: no new calls
	// started counts the calls sent, for the idle reaper.
	started uint64
	// frames counts the frames received, for the keepalive check.
	frames atomic.Uint64
}

// pending is a call waiting for its answer.
type pending struct {
	resp *fasthttp.Response
	gen  atomic.Uint64 // the write batch the request leaves with (0: not queued)
	done chan error    // the reader's verdict, once
}

// errGoneAway is a call the callee's GOAWAY says it did not take.
var errGoneAway = errors.New("the callee is closing and did not take it")

var headPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

var pendingPool = sync.Pool{New: func() any { return &pending{done: make(chan error, 1)} }}

// Do sends req and reads the answer into resp. A call that never reached
// the callee fails with an error wrapping ErrNotSent; one whose connection
// failed after it was sent may have reached the app. ctx's end stops the
// wait (and tells the callee); its error is returned.
func (c *Client) Do(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response) error {
	body := req.Body()
	req.Header.SetContentLength(len(body))
	// The header alone is serialized here; it and the body are copied once,
	// into the connection's write buffer. (fasthttp's AppendBytes of a
	// header writes from the start of the slice it is given.)
	hp := headPool.Get().(*[]byte)
	head := req.Header.AppendBytes((*hp)[:0])
	defer func() {
		if cap(head) <= maxKeptBuf {
			*hp = head[:0]
			headPool.Put(hp)
		}
	}()
	for range 3 {
		cc, err := c.conn(ctx)
		if err != nil {
			return err
		}
		p := pendingPool.Get().(*pending)
		p.resp = resp
		p.gen.Store(0)
		cc.mu.Lock()
		if cc.dead != nil || cc.goaway {
			cc.mu.Unlock()
			c.drop(cc)
			pendingPool.Put(p)
			continue // a connection that just ended: the next one
		}
		// The id is taken as the frame is queued (ids leave in order), and
		// the call is in the map before its frame can leave.
		end := firstPart(len(head) + len(body))
		id, first := cc.w.addPart(0, FrameRequest, head, body, 0, end, &p.gen)
		cc.calls[id] = p
		cc.started++
		cc.mu.Unlock()
		cc.w.kick(first)
		cc.w.sendRest(id, head, body, end, &p.gen)
		err = cc.wait(ctx, id, p)
		if !errors.Is(err, errGoneAway) {
			return err
		}
		// The callee closed the connection without taking the call: on a
		// new one (where it is likely refused, if the callee is stopping).
	}
	return fmt.Errorf("%w: connections to %s keep closing", ErrNotSent, c.addr)
}

// wait waits for call id's answer.
func (cc *clientConn) wait(ctx context.Context, id uint32, p *pending) error {
	select {
	case err := <-p.done:
		p.resp = nil
		pendingPool.Put(p)
		return err
	case <-ctx.Done():
	}
	cc.mu.Lock()
	_, mine := cc.calls[id]
	if mine {
		delete(cc.calls, id)
	}
	dead := cc.dead != nil
	cc.mu.Unlock()
	if !mine {
		// The reader took the answer (or the connection failed) just now.
		err := <-p.done
		p.resp = nil
		pendingPool.Put(p)
		return err
	}
	p.resp = nil
	pendingPool.Put(p)
	if !dead {
		cc.w.send(id, FrameCancel, nil)
	}
	return ctx.Err()
}

// conn returns the client's connection, dialing it if there is none.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: client closed", ErrNotSent)
		}
		if cc := c.cur; cc != nil {
			c.mu.Unlock()
			return cc, nil
		}
		if ch := c.dialing; ch != nil {
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %v while dialing %s", ErrNotSent, ctx.Err(), c.addr)
			}
		}
		ch := make(chan struct{})
		c.dialing = ch
		c.mu.Unlock()
		cc, err := c.open(ctx)
		c.mu.Lock()
		c.dialing = nil
		if err == nil {
			if c.closed {
				c.mu.Unlock()
				close(ch)
				cc.fail(errors.New("peer link: client closed"))
				return nil, fmt.Errorf("%w: client closed", ErrNotSent)
			}
			c.cur = cc
		}
		c.mu.Unlock()
		close(ch)
		if err != nil {
			return nil, fmt.Errorf("%w: while dialing %s: %v", ErrNotSent, c.addr, err)
		}
		return cc, nil
	}
}

// open dials a connection, says the preface and starts its reader.
func (c *Client) open(ctx context.Context) (*clientConn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	cc := &clientConn{cl: c, c: conn, w: newFrameWriter(conn), calls: map[uint32]*pending{}}
	cc.w.buf = append(cc.w.buf, MuxPreface...) // leaves with the first call
	go cc.read()
	if c.idle > 0 || c.keepalive > 0 {
		go cc.watch()
	}
	return cc, nil
}

// drop stops handing out cc.
func (c *Client) drop(cc *clientConn) {
	c.mu.Lock()
	if c.cur == cc {
		c.cur = nil
	}
	c.mu.Unlock()
}

// read reads the callee's frames until the connection ends.
func (cc *clientConn) read() {
	fr := newFrameReader(cc.c)
	err := cc.readFrames(fr)
	cc.fail(err)
}

func (cc *clientConn) readFrames(fr *frameReader) error {
	partial := map[uint32][]byte{} // answers whose last part is still to come
	for {
		n, id, typ, err := fr.next()
		if err != nil {
			return err
		}
		cc.frames.Add(1)
		more := typ&FlagMore != 0
		switch typ &^ FlagMore {
		case FramePong:
			if err := fr.skip(n); err != nil {
				return err
			}
		case FrameResponse, FrameContinued:
			if err := fr.read(n); err != nil {
				return err
			}
			msg := fr.payload
			b, ok := partial[id]
			if ok != (typ&^FlagMore == FrameContinued) || len(b)+n > MaxFrame {
				return fmt.Errorf("%w: part of an answer on stream %d out of place or too large", errProtocol, id)
			}
			if ok || more {
				b = append(b, msg...) // parts gather in a buffer of their own
				if more {
					partial[id] = b
					fr.release()
					continue
				}
				delete(partial, id)
				msg = b
			}
			closing, err := cc.deliver(fr, id, msg)
			fr.release()
			if err != nil {
				return err
			}
			if closing {
				return errors.New("peer link: closed after the callee's GOAWAY")
			}
		case FrameGoAway:
			if n != 4 {
				return fmt.Errorf("%w: GOAWAY of %d bytes", errProtocol, n)
			}
			if err := fr.read(n); err != nil {
				return err
			}
			last := binary.BigEndian.Uint32(fr.payload)
			cc.cl.drop(cc)
			cc.mu.Lock()
			cc.goaway = true
			for cid, p := range cc.calls {
				if cid > last {
					delete(cc.calls, cid)
					p.done <- fmt.Errorf("%w: %s: %w", ErrNotSent, cc.cl.addr, errGoneAway)
				}
			}
			empty := len(cc.calls) == 0
			cc.mu.Unlock()
			if empty {
				return errors.New("peer link: closed after the callee's GOAWAY")
			}
		default:
			return fmt.Errorf("%w: frame type %d from the callee", errProtocol, typ)
		}
	}
}

// deliver hands the whole answer msg of call id to its caller (none when it
// was canceled meanwhile); closing reports that the connection has nothing
// left to do after the callee's GOAWAY.
func (cc *clientConn) deliver(fr *frameReader, id uint32, msg []byte) (closing bool, err error) {
	cc.mu.Lock()
	p := cc.calls[id]
	delete(cc.calls, id)
	closing = cc.goaway && len(cc.calls) == 0
	cc.mu.Unlock()
	if p == nil {
		return closing, nil
	}
	if perr := fr.parse(msg, func(br *bufio.Reader) error {
		p.resp.Reset()
		return p.resp.Read(br)
	}); perr != nil {
		p.done <- fmt.Errorf("peer link: malformed answer: %w", perr)
		return closing, fmt.Errorf("%w: malformed answer: %v", errProtocol, perr)
	}
	p.done <- nil
	return closing, nil
}

// fail ends the connection: every pending call fails, as not sent when its
// request never left, with the first reason the connection was failed for
// (not the reader's error that closing it causes).
func (cc *clientConn) fail(err error) {
	cc.cl.drop(cc)
	cc.mu.Lock()
	if cc.dead == nil {
		cc.dead = err
	}
	cc.mu.Unlock()
	_ = cc.c.Close() // before the calls are taken: no write starts after
	cc.mu.Lock()
	err = cc.dead
	calls := cc.calls
	cc.calls = map[uint32]*pending{}
	cc.mu.Unlock()
	for _, p := range calls {
		if !cc.w.sent(p.gen.Load()) {
			p.done <- fmt.Errorf("%w: connection to %s ended first: %v", ErrNotSent, cc.cl.addr, err)
		} else {
			p.done <- fmt.Errorf("peer %s: connection ended before the answer: %v", cc.cl.addr, err)
		}
	}
}

// errLinkIdle closes a connection that carried no call for an idle time.
var errLinkIdle = errors.New("peer link: idle")

// watch closes the connection once it has carried no call for a whole
// idle time (so after one to two of them), counting calls rather than
// reading the clock on each; and it runs the keepalive check (package
// keepalive) every keepalive period, PINGing a callee that says nothing
// while calls wait and failing the connection and its calls when that goes
// unanswered. A callee whose host went away without closing the connection
// would otherwise hold the calls until their own deadlines, if they have
// any.
func (cc *clientConn) watch() {
	var idleC, kaC <-chan time.Time
	if cc.cl.idle > 0 {
		t := time.NewTicker(cc.cl.idle)
		defer t.Stop()
		idleC = t.C
	}
	if cc.cl.keepalive > 0 {
		t := time.NewTicker(cc.cl.keepalive)
		defer t.Stop()
		kaC = t.C
	}
	var seen uint64
	var alive keepalive.Check
	for {
		select {
		case <-idleC:
			cc.mu.Lock()
			if cc.dead != nil {
				cc.mu.Unlock()
				return
			}
			idle := len(cc.calls) == 0 && cc.started == seen
			seen = cc.started
			if idle {
				cc.dead = errLinkIdle // no call starts on it from now
			}
			cc.mu.Unlock()
			if idle {
				cc.fail(errLinkIdle)
				return
			}
		case <-kaC:
			cc.mu.Lock()
			dead, waiting := cc.dead != nil, len(cc.calls) > 0
			cc.mu.Unlock()
			if dead {
				return
			}
			switch alive.Step(cc.frames.Load(), waiting) {
			case keepalive.GiveUp:
				cc.fail(fmt.Errorf("peer link: %s answered no keepalive PING for %v", cc.cl.addr, cc.cl.keepalive))
				return
			case keepalive.Ping:
				cc.w.send(0, FramePing, nil)
			}
		}
	}
}
