package h2proxy

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Pool keeps one upstream connection to an address, dialed on first use
// and again after it fails or the peer sent GOAWAY.
type Pool struct {
	addr string
	dial func(ctx context.Context) (net.Conn, error)

	mu     sync.Mutex
	c      *Conn
	closed bool
}

// DialTimeout bounds a dial when the caller's context has no deadline.
const DialTimeout = 5 * time.Second

// NewPool returns a pool for addr. dial is nil for TCP.
func NewPool(addr string, dial func(ctx context.Context) (net.Conn, error)) *Pool {
	p := &Pool{addr: addr, dial: dial}
	if p.dial == nil {
		p.dial = func(ctx context.Context) (net.Conn, error) {
			d := net.Dialer{Timeout: DialTimeout}
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return p
}

// Addr is the pool's address.
func (p *Pool) Addr() string { return p.addr }

// Get returns a usable connection, dialing one if needed. A failed dial is
// a codes.Unavailable status.
func (p *Pool) Get(ctx context.Context) (*Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, status.Error(codes.Unavailable, "h2proxy: pool closed")
	}
	if p.c != nil && p.c.usable() {
		return p.c, nil
	}
	// A connection that got GOAWAY serves its calls to the end; new calls
	// take a new one.
	nc, err := p.dial(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connection error: %v", err)
	}
	c, err := Client(nc)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connection error: %v", err)
	}
	p.c = c
	return c, nil
}

// open opens a stream on the pool's connection, redialing once when the
// connection turned out to be closing.
func (p *Pool) open(ctx context.Context, fields []hpack.HeaderField, down *stream) (*stream, error) {
	for attempt := 0; ; attempt++ {
		c, err := p.Get(ctx)
		if err != nil {
			return nil, err
		}
		s, err := c.openStream(fields, down)
		if err == nil || attempt > 0 || c.usable() {
			return s, err
		}
	}
}

// Close closes the pool's connection.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	c := p.c
	p.c = nil
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Client starts HTTP/2 on a dialed connection: it writes the preface and
// SETTINGS and starts the reader.
func Client(nc net.Conn) (*Conn, error) {
	c := newConn(nc, false)
	c.wmu.Lock()
	_, err := c.bw.WriteString(http2.ClientPreface)
	if err == nil {
		err = c.settings()
	}
	if err == nil {
		err = c.bw.Flush()
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
	id := c.nextID
	c.nextID += 2
	p := &stream{c: c, id: id, sendWin: c.peerInitWin, peer: down, sentHdr: true}
	c.streams[id] = p
	c.mu.Unlock()
	c.writeHeadersLocked(id, fields, false)
	return p, nil
}
