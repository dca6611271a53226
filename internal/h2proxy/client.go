package h2proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-proxy/switchyard/internal/keepalive"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

// Pool keeps the upstream connections to an address: one while the peer
// takes every call on it, another whenever all are at the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS, a fresh one after a connection fails or
// the peer sent GOAWAY. A connection that carried no call for between one
// and two idleCheck periods is closed (GOAWAY first). With a keepalive, a
// connection to a peer that says it answers PINGs (settingAnswersPings:
// switchyard's own listeners) is PINGed when its calls wait and nothing came
// from the peer for a keepalive period, and given up, failing its calls,
// when nothing comes for another.
type Pool struct {
	addr      string
	dial      func(ctx context.Context) (net.Conn, error)
	keepalive time.Duration

	mu      sync.Mutex
	conns   []*Conn
	dialing chan struct{} // closed when the dial under way ends; nil: none
	closed  bool
	stop    chan struct{} // closed by Close: ends the idle check
	janitor sync.Once
}

// idleCheck is how often a pool looks for connections that carried no
// call since it last looked.
var idleCheck = 30 * time.Second

// DialTimeout bounds a dial when the caller's context has no deadline.
const DialTimeout = 5 * time.Second

// NewPool returns a pool for addr. dial is nil for TCP.
func NewPool(addr string, dial func(ctx context.Context) (net.Conn, error)) *Pool {
	p := &Pool{addr: addr, dial: dial, stop: make(chan struct{})}
	if p.dial == nil {
		p.dial = func(ctx context.Context) (net.Conn, error) {
			d := net.Dialer{Timeout: DialTimeout}
			return rawio.Wrapped(d.DialContext(ctx, "tcp", addr))
		}
	}
	return p
}

// WithKeepalive sets the pool's keepalive period (0: none); call it before
// the pool's first call.
func (p *Pool) WithKeepalive(d time.Duration) *Pool {
	p.keepalive = d
	return p
}

// Addr is the pool's address.
func (p *Pool) Addr() string { return p.addr }

// Conns is how many connections the pool holds.
func (p *Pool) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// open opens a stream on a connection with room for it, dialing one when
// none has. One dial at a time: the calls that need a connection meanwhile
// wait for it, each until its own context ends. A failed dial is a
// codes.Unavailable status.
func (p *Pool) open(ctx context.Context, fields []hpack.HeaderField, down *stream) (*stream, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, status.Error(codes.Unavailable, "h2proxy: pool closed")
		}
		// A connection that cannot open a stream for any reason but its
		// stream limit is closing (it failed or got GOAWAY): it leaves the
		// pool, and its calls in flight go on.
		kept := p.conns[:0]
		for i, c := range p.conns {
			s, err := c.openStream(fields, down)
			if err == nil {
				kept = append(kept, p.conns[i:]...) // c and those not tried
				clear(p.conns[len(kept):])
				p.conns = kept
				p.mu.Unlock()
				return s, nil
			}
			if errors.Is(err, errFull) {
				kept = append(kept, c)
			}
		}
		clear(p.conns[len(kept):])
		p.conns = kept
		if wait := p.dialing; wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		done := make(chan struct{})
		p.dialing = done
		p.mu.Unlock()
		c, err := p.connect(ctx)
		p.mu.Lock()
		p.dialing = nil
		close(done)
		if err == nil && p.closed {
			c.Close()
			err = status.Error(codes.Unavailable, "h2proxy: pool closed")
		}
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.janitor.Do(func() { go p.watch(idleCheck) })
	}
}

// watch runs, until the pool closes, the idle check every period and the
// keepalive check every keepalive period.
func (p *Pool) watch(period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	var kaC <-chan time.Time
	if p.keepalive > 0 {
		ka := time.NewTicker(p.keepalive)
		defer ka.Stop()
		kaC = ka.C
	}
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.closeIdle()
		case <-kaC:
			p.checkAlive()
		}
	}
}

// checkAlive runs the keepalive check (package keepalive) on each
// connection; only peers that said they answer PINGs are PINGed.
func (p *Pool) checkAlive() {
	p.mu.Lock()
	conns := append([]*Conn(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		waiting := c.active > 0 && !c.closed
		c.mu.Unlock()
		switch c.alive.Step(c.frames.Load(), waiting && c.answersPings.Load()) {
		case keepalive.GiveUp:
			c.fail(fmt.Errorf("h2proxy: %s answered no keepalive PING for %v", p.addr, p.keepalive))
		case keepalive.Ping:
			c.wmu.Lock()
			c.writeErr(c.wf.WritePing(false, [8]byte{'k', 'e', 'e', 'p', 'a', 'l', 'i', 'v'}))
			c.flushLocked()
			c.wmu.Unlock()
		}
	}
}

// closeIdle closes the connections on which no call was open, opened or
// ended since the last look: run every idleCheck period, they carried no
// call for between one and two periods.
func (p *Pool) closeIdle() {
	p.mu.Lock()
	kept := p.conns[:0]
	var idle []*Conn
	for _, c := range p.conns {
		if c.idleSinceLastLook() {
			idle = append(idle, c)
		} else {
			kept = append(kept, c)
		}
	}
	clear(p.conns[len(kept):])
	p.conns = kept
	p.mu.Unlock()
	for _, c := range idle {
		c.goAwayIdle()
	}
}

// idleSinceLastLook reports whether no call was open on c, opened or
// ended, since the last look; if so, c takes no new call from now on.
func (c *Conn) idleSinceLastLook() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	idle := c.active == 0 && c.touched == c.touchedSeen
	c.touchedSeen = c.touched
	if idle {
		c.goAway = true
	}
	return idle
}

// goAwayIdle says GOAWAY on an idle connection and closes it.
func (c *Conn) goAwayIdle() {
	c.wmu.Lock()
	c.writeErr(c.wf.WriteGoAway(0, http2.ErrCodeNo, nil))
	c.flushLocked()
	c.wmu.Unlock()
	c.fail(errIdle)
}

// errIdle closes a client connection that carried no call for a while.
var errIdle = errors.New("h2proxy: connection idle")

// connect dials a connection and waits for the peer's SETTINGS, so that its
// stream limit and windows apply from the first call on.
func (p *Pool) connect(ctx context.Context) (*Conn, error) {
	nc, err := p.dial(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// The call's deadline or cancellation, not the app's fault.
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Errorf(codes.Unavailable, "connection error: %v", err)
	}
	c, err := Client(nc)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connection error: %v", err)
	}
	t := time.NewTimer(DialTimeout)
	defer t.Stop()
	select {
	case <-c.settled:
	case <-c.done:
	case <-ctx.Done():
		c.Close()
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-t.C:
		c.Close()
		return nil, status.Error(codes.Unavailable, "connection error: no HTTP/2 SETTINGS from the peer")
	}
	if !c.usable() {
		return nil, status.Error(codes.Unavailable, "connection error: the peer closed the connection")
	}
	return c, nil
}

// Close closes the pool's connections.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		close(p.stop)
	}
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Client starts HTTP/2 on a dialed connection: it writes the preface and
// SETTINGS and starts the reader.
func Client(nc net.Conn) (*Conn, error) {
	c := newConn(nc, false)
	c.wmu.Lock()
	c.out = append(c.out, http2.ClientPreface...)
	err := c.settings()
	if err == nil {
		_ = nc.SetWriteDeadline(time.Now().Add(DialTimeout))
		_, err = nc.Write(c.out)
		_ = nc.SetWriteDeadline(time.Time{})
		c.out = c.out[:0]
	}
	c.wmu.Unlock()
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// openStream opens a stream with fields (END_STREAM not set) whose frames
// go to down. The HEADERS frame is buffered; the caller flushes.
func (c *Conn) openStream(fields []hpack.HeaderField, down *stream) (*stream, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return nil, status.Errorf(codes.Unavailable, "connection error: %v", c.werr)
	}
	c.mu.Lock()
	if c.closed || c.goAway || c.nextID > maxID {
		c.goAway = true
		c.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "h2proxy: upstream connection is closing")
	}
	if c.active >= c.peerMaxStreams {
		c.mu.Unlock()
		return nil, errFull
	}
	c.active++
	c.touched++
	id := c.nextID
	c.nextID += 2
	p := &stream{c: c, id: id, sendWin: c.peerInitWin, peer: down, sentHdr: true}
	c.streams[id] = p
	c.mu.Unlock()
	c.writeHeadersLocked(id, fields, false)
	return p, nil
}

// errFull: the connection is at the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
var errFull = errors.New("h2proxy: upstream connection at its stream limit")
