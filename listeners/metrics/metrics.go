// Package metrics is the Prometheus exposition listener (daprd's :9090):
// GET /metrics (or any path) answers every metric in the runtime's registry.
package metrics

import (
	"bytes"
	"context"
	"errors"
	"net"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/listeners"
)

func init() { listeners.Register(factory{}) }

type factory struct{}

var _ listeners.Factory = factory{}

func (factory) Kind() string { return config.ListenerMetrics }

func (factory) Start(spec config.Listener, _ *listeners.ChainRef, rt *listeners.Runtime) (listeners.Listener, error) {
	log := rt.Logger.With(zap.String("scope", "listener.metrics"))
	return Serve(log, spec, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
		var b bytes.Buffer
		if err := rt.Stats.WritePrometheus(&b); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusInternalServerError)
			return
		}
		ctx.SetBody(b.Bytes())
	})
}

// Server is a small fasthttp server on a listener's addresses, shared by
// the admin and metrics listeners.
type Server struct {
	srv *fasthttp.Server
	lns []net.Listener
}

// Serve binds spec's addresses and serves h.
func Serve(log *zap.Logger, spec config.Listener, h fasthttp.RequestHandler) (*Server, error) {
	lns, err := listeners.Listen(log, spec.Name, spec.Addresses)
	if err != nil {
		return nil, err
	}
	s := &Server{lns: lns, srv: &fasthttp.Server{Handler: h, NoDefaultServerHeader: true, CloseOnShutdown: true}}
	for _, ln := range lns {
		go func() {
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("listener stopped", zap.Error(err))
			}
		}()
	}
	log.Info("listening", zap.String("listener", spec.Name), zap.Stringers("addresses", listeners.AddrsOf(lns)))
	return s, nil
}

// Addrs returns the bound addresses.
func (s *Server) Addrs() []net.Addr { return listeners.AddrsOf(s.lns) }

// Close shuts the server down.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	// fasthttp only closes the listeners Serve has already taken; one whose
	// goroutine has not run yet would otherwise stay open for good.
	for _, ln := range s.lns {
		_ = ln.Close()
	}
	return err
}
