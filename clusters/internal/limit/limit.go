// Package limit is the app clusters' max-concurrency gate (daprd's
// --app-max-concurrency): a request over the limit waits for a free slot,
// within its route timeout and its context.
package limit

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
)

// ErrTimeout is returned when the timeout ran out before a slot was free.
var ErrTimeout = errors.New("timed out waiting for a free slot under the app's max concurrency")

// Gate admits at most its capacity of requests at once. The nil Gate
// admits everything.
type Gate chan struct{}

// New returns a gate of n slots, or nil (no limit) when n <= 0.
func New(n int) Gate {
	if n <= 0 {
		return nil
	}
	return make(Gate, n)
}

// Acquire takes a slot, waiting at most timeout (0: no limit of its own)
// or until ctx ends, and returns how long it waited. A free slot is taken
// at once, with no timer.
func (g Gate) Acquire(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	if g == nil {
		return 0, nil
	}
	select {
	case g <- struct{}{}:
		return 0, nil
	default:
	}
	start := time.Now()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case g <- struct{}{}:
		return time.Since(start), nil
	case <-ctx.Done():
		return time.Since(start), ctx.Err()
	case <-expired:
		return time.Since(start), ErrTimeout
	}
}

// Release gives a slot back.
func (g Gate) Release() {
	if g != nil {
		<-g
	}
}

// Code is the gRPC code of an Acquire error: DeadlineExceeded for a timeout
// or a context past its deadline, Canceled for a cancelled context.
func Code(err error) codes.Code {
	if errors.Is(err, context.Canceled) {
		return codes.Canceled
	}
	return codes.DeadlineExceeded
}
