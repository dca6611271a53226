//go:build unix

package sidecar

import (
	"errors"
	"net"
	"syscall"
)

// socketOf returns the descriptor of c's socket, -1 when c has none. The
// link reads it once per connection; peeking through it needs no
// RawConn.Read (which allocates and arms the poller) on every request.
func socketOf(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	_ = rc.Control(func(s uintptr) { fd = int(s) })
	return fd
}

// idleClosed reports whether the peer closed the socket, reset it or sent
// something on it while it was idle, without blocking: a peek. The caller
// owns the connection while it asks (it is about to write a request), so
// the descriptor cannot be closed under it.
func idleClosed(fd int) bool {
	if fd < 0 {
		return false
	}
	var b [1]byte
	n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n > 0 || (err == nil && n == 0) || (err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR))
}
