package listeners

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// AcceptLoop accepts connections from ln and hands each to serve until ln
// is closed or done is closed. A temporary accept error (out of file
// descriptors and the like) does not stop it: it waits and goes on,
// backing off as grpc-go's and fasthttp's Serve do.
func AcceptLoop(ln net.Listener, done <-chan struct{}, serve func(net.Conn)) error {
	var wait time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			var ne net.Error
			if (errors.As(err, &te) && te.Temporary()) || (errors.As(err, &ne) && ne.Timeout()) {
				wait = min(max(2*wait, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(wait):
				case <-done:
					return err
				}
				continue
			}
			return err
		}
		wait = 0
		serve(c)
	}
}

// ChanListener is a net.Listener fed with connections by Push: a server
// (grpc-go's, fasthttp's) serves connections that another accept loop
// sorted or that were made in-process.
type ChanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed atomic.Bool
	// OnClose runs once when the listener is closed (nil: nothing); it may
	// close other listeners that close this one.
	OnClose func()
}

// NewChanListener returns a listener that reports addr.
func NewChanListener(addr net.Addr) *ChanListener {
	return &ChanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Push hands c to the server; it closes c if the listener is closed.
func (l *ChanListener) Push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// Accept returns the next pushed connection.
func (l *ChanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and Push.
func (l *ChanListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	close(l.done)
	if l.OnClose != nil {
		l.OnClose()
	}
	return nil
}

// Done is closed when the listener is closed.
func (l *ChanListener) Done() <-chan struct{} { return l.done }

// Addr is the address given to NewChanListener.
func (l *ChanListener) Addr() net.Addr { return l.addr }

// PrefixConn gives back bytes already read from Conn before the rest.
type PrefixConn struct {
	net.Conn
	Head []byte
}

// SyscallConn gives raw access to the socket under Conn, for writes that
// must not block (h2proxy's). A read through it would skip Head.
func (c *PrefixConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("listeners: the connection gives no raw access")
	}
	return sc.SyscallConn()
}

func (c *PrefixConn) Read(p []byte) (int, error) {
	if len(c.Head) > 0 {
		n := copy(p, c.Head)
		c.Head = c.Head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
