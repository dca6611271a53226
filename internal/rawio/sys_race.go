//go:build race

package rawio

import (
	"errors"
	"syscall"
)

// Under the race detector Read and Write are the syscall package's: it
// tells the detector that what a write sends happens before what a read
// gets, which raw system calls would hide (and every exchange of data
// through a socket would be reported as a race). `make test` also runs
// the packages that use these without -race.

// Read is read(2) on fd, which must not block (a non-blocking socket).
func Read(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return result(n, err)
}

// Write is write(2) on fd, which must not block (a non-blocking socket).
func Write(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return result(n, err)
}

func result(n int, err error) (int, syscall.Errno) {
	if err == nil {
		return n, 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return 0, e
	}
	return 0, syscall.EIO
}
