package grpcwire

import (
	"errors"
	"io"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StreamDesc describes a proxied call: both sides may stream.
var StreamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// Pump copies frames between the downstream server stream and the upstream
// client stream until the upstream ends, then hands its headers, trailers
// and status to the downstream. It returns the status error to return from
// the server handler (nil for OK). cancelUp cancels the upstream's context:
// Pump calls it when the downstream fails, and the caller calls it when Pump
// returns.
func Pump(down grpc.ServerStream, up grpc.ClientStream, cancelUp func()) error {
	// The upstream's answer is pumped on the calling goroutine; only the
	// downstream's messages need a goroutine of their own. Its failure is
	// recorded before it cancels the upstream, so that it is seen below.
	var failed atomic.Pointer[error]
	go func() {
		if err := downToUp(down, up); err != nil && !errors.Is(err, io.EOF) {
			failed.Store(&err)
			cancelUp()
		}
	}()
	err := upToDown(up, down)
	if derr := failed.Load(); derr != nil {
		// The downstream failed first: that explains the failure better
		// than the cancellation it caused upstream.
		if s, ok := status.FromError(*derr); ok && s.Code() != codes.Unknown {
			return *derr
		}
		return status.Errorf(codes.Canceled, "proxy: downstream: %v", *derr)
	}
	down.SetTrailer(up.Trailer())
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func downToUp(down grpc.ServerStream, up grpc.ClientStream) error {
	f := new(Frame)
	for {
		if err := down.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				// The client half-closed: so does the upstream.
				_ = up.CloseSend()
			}
			return err
		}
		if err := up.SendMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				// The upstream ended; its status comes from RecvMsg.
				return nil
			}
			return err
		}
	}
}

func upToDown(up grpc.ClientStream, down grpc.ServerStream) error {
	f := new(Frame)
	for i := 0; ; i++ {
		err := up.RecvMsg(f)
		if i == 0 {
			// Headers are known once the first message (or the status)
			// arrived; forward them before anything else.
			if md, herr := up.Header(); herr == nil && len(md) > 0 {
				if serr := down.SendHeader(md); serr != nil {
					return serr
				}
			}
		}
		if err != nil {
			return err // io.EOF on OK, else the upstream's status
		}
		if err := down.SendMsg(f); err != nil {
			return err
		}
	}
}
