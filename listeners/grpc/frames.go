package grpc

import (
	"strings"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
	"github.com/switchyard-proxy/switchyard/listeners/framed"
)

// Frame mode (grpc_frame_proxy, the default): the listener serves its port
// with listeners/framed. A call carrying dapr-app-id goes through the
// chain as a streaming Exchange whose Stream is the h2proxy.Stream; the
// cluster (the gRPC app, or the sidecar of another app id) bridges its
// frames without decoding a message. Every other call (the Dapr API, calls
// without dapr-app-id) goes to the grpc-go server in-process.

// PeerField is framed.PeerField.
const PeerField = framed.PeerField

const daprService = "/dapr.proto.runtime.v1.Dapr/"

func (l *Listener) startFrames() {
	l.frames = framed.New(l.log, l.srv, takeProxied, l.proxyFrames)
	for _, ln := range l.lns {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := l.frames.Serve(ln); err != nil {
				l.log.Error("gRPC API listener stopped", zap.Error(err))
			}
		}()
	}
}

// takeProxied reports a gRPC proxying call: dapr-app-id, and not the Dapr
// API.
func takeProxied(path, appID string) bool {
	return appID != "" && !strings.HasPrefix(path, daprService)
}

// proxyFrames runs a proxied call through the chain; the cluster bridges
// its frames.
func (l *Listener) proxyFrames(st *h2proxy.Stream) {
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolGRPC
	ex.Listener = l.name
	framed.Exchange(ex, st)
	ex.SetInvoke([]byte(st.Header(grpcwire.MDAppID)), []byte(grpcwire.RouteMethod(st.FullMethod())))
	err := l.chain.Load().Handle(st.Context(), ex)
	if err != nil || !st.Answered() {
		framed.Fail(st, err)
	}
}
