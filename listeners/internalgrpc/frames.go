package internalgrpc

import (
	"strings"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
	"github.com/switchyard-proxy/switchyard/listeners/framed"
)

// Frame mode (grpc_frame_proxy, the default): the internal port's gRPC
// connections are served with listeners/framed. gRPC proxying calls a peer
// sidecar forwards (any method but ServiceInvocation's) go through the
// chain as h2proxy streams, which the app cluster bridges frame by frame;
// CallLocal and CallLocalStream go to the grpc-go server in-process.

const invocationService = "/dapr.proto.internals.v1.ServiceInvocation/"

func takeProxied(path, _ string) bool {
	return !strings.HasPrefix(path, invocationService)
}

// proxyFrames runs a forwarded proxied call through the chain for our app.
func (l *Listener) proxyFrames(st *h2proxy.Stream) {
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolInternal
	ex.Listener = l.name
	framed.Exchange(ex, st)
	if v := st.Header(grpcwire.MDCallerID); v != "" {
		ex.CallerAppID = []byte(v)
	}
	ex.SetInvoke(l.appID, []byte(grpcwire.RouteMethod(st.FullMethod())))
	err := l.chain.Load().Handle(st.Context(), ex)
	if err != nil || !st.Answered() {
		framed.Fail(st, err)
	}
}
