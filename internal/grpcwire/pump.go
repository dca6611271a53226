package grpcwire

import (
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StreamDesc describes a proxied call: both sides may stream.
var StreamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// Pump copies frames between the downstream server stream and the upstream
// client stream until the upstream ends, then hands its headers, trailers
// and status to the downstream. It returns the status error to return from
// the server handler (nil for OK). The caller cancels the upstream's context
// when Pump returns, which ends the upstream if the downstream went away.
func Pump(down grpc.ServerStream, up grpc.ClientStream) error {
	s2c := make(chan error, 1)
	go func() { s2c <- downToUp(down, up) }()
	c2s := make(chan error, 1)
	go func() { c2s <- upToDown(up, down) }()
	for {
		select {
		case err := <-s2c:
			if err == nil || errors.Is(err, io.EOF) {
				// The client finished sending (or the upstream stopped
				// reading): half-close upstream and wait for its answer.
				_ = up.CloseSend()
				s2c = nil
				continue
			}
			if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
				return err
			}
			return status.Errorf(codes.Canceled, "proxy: downstream: %v", err)
		case err := <-c2s:
			down.SetTrailer(up.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func downToUp(down grpc.ServerStream, up grpc.ClientStream) error {
	f := new(Frame)
	for {
		if err := down.RecvMsg(f); err != nil {
			return err // io.EOF when the client half-closed
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
