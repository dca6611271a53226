// Package rawio reads and writes TCP sockets with raw system calls.
//
// A read or write on a non-blocking socket never blocks, so it need not
// enter the Go runtime's syscall state. Entering it costs more than the
// bookkeeping: when every P of the process was idle, the first goroutine
// to enter a syscall wakes the runtime's monitor thread (sysmon) and resets
// its polling interval to 20 µs, and a P that stays in a syscall while the
// other Ps are busy is retaken and handed to another thread. Under a load
// that idles the process between bursts (a proxy waiting on its peers),
// that kept sysmon waking thousands of times a second, and half the
// proxy's context switches were its. Waiting for a socket to become
// readable or writable still goes through the runtime's netpoller (the
// socket's syscall.RawConn), with its deadlines.
package rawio

import (
	"context"
	"io"
	"net"
	"sync"
	"syscall"
)

// Conn is a net.Conn whose Read and Write are raw system calls on its
// socket. Every other method is the wrapped connection's.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	rmu   sync.Mutex // one Read at a time uses the fields below
	rfn   func(fd uintptr) bool
	rp    []byte
	rn    int
	rerr  error
	wmu   sync.Mutex // one Write at a time uses the fields below
	wfn   func(fd uintptr) bool
	wp    []byte
	wn    int
	wfail error
}

// Wrap returns c reading and writing with raw system calls when it is a
// socket that gives raw access, and c itself otherwise.
func Wrap(c net.Conn) net.Conn {
	if _, ok := c.(*Conn); ok {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{Conn: c, rc: rc}
	w.rfn = w.readFD
	w.wfn = w.writeFD
	return w
}

// SyscallConn gives raw access to the wrapped socket.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Read reads what the socket has, waiting in the netpoller (within the read
// deadline) when it has nothing; 0 bytes from the socket is io.EOF.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.rfn)
	n, rerr := c.rn, c.rerr
	c.rp, c.rerr = nil, nil
	c.rmu.Unlock()
	if rerr == nil {
		rerr = err
	}
	return n, rerr
}

func (c *Conn) readFD(fd uintptr) bool {
	for {
		n, e := Read(fd, c.rp)
		switch e {
		case 0:
			c.rn = n
			if n == 0 {
				c.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = c.opError("read", e)
			return true
		}
	}
}

// Write writes all of p, waiting in the netpoller (within the write
// deadline) while the socket takes nothing.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wp, c.wn, c.wfail = p, 0, nil
	err := c.rc.Write(c.wfn)
	n, werr := c.wn, c.wfail
	c.wp, c.wfail = nil, nil
	c.wmu.Unlock()
	if werr == nil {
		werr = err
	}
	return n, werr
}

func (c *Conn) writeFD(fd uintptr) bool {
	n, err := WriteSome(fd, c.wp[c.wn:])
	c.wn += n
	if err != nil {
		c.wfail = c.opError("write", err)
		return true
	}
	return c.wn == len(c.wp) // not yet: the socket is full, wait until it is not
}

// WriteSome writes p to fd, a non-blocking socket, until all of it is
// written or the socket takes no more (EAGAIN, not an error); it never
// waits.
func WriteSome(fd uintptr, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, e := Write(fd, p[n:])
		switch e {
		case 0:
			if m == 0 {
				return n, io.ErrUnexpectedEOF
			}
			n += m
		case syscall.EINTR:
		case syscall.EAGAIN:
			return n, nil
		default:
			return n, e
		}
	}
	return n, nil
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Listener wraps the connections ln accepts (see Wrap).
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Wrapped wraps what a dial returns: Wrapped(d.DialContext(ctx, "tcp", a)).
func Wrapped(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// DialContext dials a TCP address and wraps the connection; it is the
// dialer given to grpc-go clients (grpc.WithContextDialer).
func DialContext(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return Wrapped(d.DialContext(ctx, "tcp", addr))
}
