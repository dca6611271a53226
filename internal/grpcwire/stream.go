package grpcwire

import (
	"context"
	"net"
	"net/netip"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/switchyard-proxy/switchyard/filters"
)

// ServerStream is the filters.Stream of a proxied gRPC call accepted by a
// listener: Native returns the grpc.ServerStream.
type ServerStream struct {
	grpc.ServerStream
	Method string
	// MD is the call's incoming metadata as the listener read it (a copy the
	// listener owns); nil when the listener did not keep it.
	MD metadata.MD
}

// IncomingMD returns the incoming metadata of a proxied call: the copy the
// listener kept in its ServerStream, else the one in ctx. Reading it once
// per call saves a copy of every key and value per hop.
func IncomingMD(ctx context.Context, st filters.Stream) metadata.MD {
	if s, ok := st.(*ServerStream); ok && s.MD != nil {
		return s.MD
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return md
}

var _ filters.Stream = (*ServerStream)(nil)

// FullMethod returns "/pkg.Service/Method".
func (s *ServerStream) FullMethod() string { return s.Method }

// Native returns the grpc.ServerStream.
func (s *ServerStream) Native() any { return s.ServerStream }

// RouteMethod is the method part of the route key of a proxied call: the
// full method without its leading slash ("pkg.Service/Method").
func RouteMethod(full string) string {
	if len(full) > 0 && full[0] == '/' {
		return full[1:]
	}
	return full
}

// PeerAddr returns the IP of the caller of a gRPC call.
func PeerAddr(p *peer.Peer) netip.Addr {
	if p == nil || p.Addr == nil {
		return netip.Addr{}
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		// What the listeners see: no string to format and parse per call.
		return a.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// trailerKey is the exchange value key under which a gRPC upstream leaves
// its response trailers (metadata.MD) for the listener.
type trailerKey struct{}

// TrailerKey is the filters.Exchange value key of response trailers.
var TrailerKey any = trailerKey{}
