//go:build unix

package sidecar

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// idleClosed reports whether the peer closed c, reset it or sent something
// on it while it was idle, without blocking: a peek at the socket.
func idleClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	// The last response's read deadline may have passed; with it set, the
	// peek would not run.
	_ = c.SetReadDeadline(time.Time{})
	stale := false
	_ = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		stale = !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) || n > 0
		return true
	})
	return stale
}
