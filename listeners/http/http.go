// Package http is the Dapr HTTP API listener (fasthttp): it decodes
// /v1.0/invoke, /v1.0/publish and the dapr-app-id header form into
// Exchanges for the chain, and serves the sidecar's own endpoints (healthz,
// metadata, shutdown) directly.
package http

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/listeners"
)

func init() { listeners.Register(factory{}) }

type factory struct{}

var _ listeners.Factory = factory{}

func (factory) Kind() string { return config.ListenerHTTP }

func (factory) Start(spec config.Listener, chain *listeners.ChainRef, rt *listeners.Runtime) (listeners.Listener, error) {
	return Start(spec, chain, rt)
}

// Listener is a running Dapr HTTP API listener.
type Listener struct {
	name  string
	chain *listeners.ChainRef
	rt    *listeners.Runtime
	log   *zap.Logger
	srv   *fasthttp.Server
	lns   []net.Listener
	done  chan struct{}
}

var _ listeners.Listener = (*Listener)(nil)

// Start binds the listener's addresses and serves.
func Start(spec config.Listener, chain *listeners.ChainRef, rt *listeners.Runtime) (*Listener, error) {
	cfg := rt.Snapshot().Config
	log := rt.Logger.With(zap.String("scope", "listener.http"), zap.String("listener", spec.Name))
	maxBody := cfg.DaprHTTPMaxRequestSize
	if maxBody <= 0 {
		maxBody = 4
	}
	readBuf := cfg.DaprHTTPReadBufferSize
	if readBuf <= 0 {
		readBuf = 4
	}
	l := &Listener{name: spec.Name, chain: chain, rt: rt, log: log, done: make(chan struct{})}
	l.srv = &fasthttp.Server{
		Handler:                       l.serve,
		ErrorHandler:                  l.serveError,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		NoDefaultDate:                 true,
		MaxRequestBodySize:            maxBody << 20,
		ReadBufferSize:                readBuf << 10,
		CloseOnShutdown:               true,
		DisablePreParseMultipartForm:  true,
		Logger:                        zapPrintf{log},
		TCPKeepalive:                  true,
		IdleTimeout:                   120 * time.Second,
		DisableHeaderNamesNormalizing: false,
	}
	lns, err := listeners.Listen(log, spec.Name, spec.Addresses)
	if err != nil {
		return nil, err
	}
	l.lns = lns
	for _, ln := range lns {
		go func() {
			if err := l.srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("http listener stopped", zap.Error(err))
			}
		}()
	}
	log.Info("HTTP API listening", zap.Stringers("addresses", listeners.AddrsOf(lns)))
	return l, nil
}

// Addrs returns the bound addresses.
func (l *Listener) Addrs() []net.Addr { return listeners.AddrsOf(l.lns) }

// Close stops accepting and waits for in-flight requests until ctx ends.
func (l *Listener) Close(ctx context.Context) error {
	return l.srv.ShutdownWithContext(ctx)
}

var (
	pInvoke   = []byte("/v1.0/invoke/")
	pMethod   = []byte("/method/")
	pPublish  = []byte("/v1.0/publish/")
	pBulk     = []byte("/v1.0-alpha1/publish/bulk/")
	pHealthz  = []byte("/v1.0/healthz")
	pOutbound = []byte("/v1.0/healthz/outbound")
	pMetadata = []byte("/v1.0/metadata")
	pMetaKey  = []byte("/v1.0/metadata/")
	pShutdown = []byte("/v1.0/shutdown")
	hAppID    = "dapr-app-id"
	basicUser = []byte("dapr-app-id:")
)

func (l *Listener) serve(ctx *fasthttp.RequestCtx) {
	path := ctx.Request.URI().PathOriginal()
	if id, method, ok := invokeTarget(path, &ctx.Request.Header); ok {
		l.invoke(ctx, id, method)
		return
	}
	if bytes.HasPrefix(path, pInvoke) {
		l.writeError(ctx, errNotFound(path), filters.KindInvoke)
		return
	}
	switch {
	case bytes.HasPrefix(path, pPublish):
		l.publish(ctx, path[len(pPublish):], false)
	case bytes.HasPrefix(path, pBulk):
		l.publish(ctx, path[len(pBulk):], true)
	case bytes.Equal(path, pHealthz):
		l.healthz(ctx, l.rt.Health.Ready())
	case bytes.Equal(path, pOutbound):
		l.healthz(ctx, l.rt.Health.OutboundReady())
	case bytes.Equal(path, pMetadata) && ctx.IsGet():
		l.metadata(ctx)
	case bytes.HasPrefix(path, pMetaKey) && ctx.IsPut():
		l.rt.SetExtended(string(path[len(pMetaKey):]), string(ctx.Request.Body()))
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	case bytes.Equal(path, pShutdown) && (ctx.IsPost() || ctx.IsGet()):
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		if l.rt.Shutdown != nil {
			go l.rt.Shutdown()
		}
	default:
		l.writeError(ctx, errNotFound(path), filters.KindUnknown)
	}
}

func (l *Listener) invoke(ctx *fasthttp.RequestCtx, appID, method []byte) {
	ex := filters.AcquireExchange(false)
	ex.Protocol = filters.ProtocolHTTP
	ex.Listener = l.name
	ex.Req = &ctx.Request
	ex.Resp = &ctx.Response
	ex.SetInvoke(appID, method)
	ex.SetRemoteAddr(remoteIP(ctx))
	if err := l.chain.Load().Handle(ctx, ex); err != nil {
		l.writeError(ctx, err, filters.KindInvoke)
	}
	filters.ReleaseExchange(ex)
}

func (l *Listener) publish(ctx *fasthttp.RequestCtx, rest []byte, bulk bool) {
	if !ctx.IsPost() && !ctx.IsPut() {
		l.writeError(ctx, errNotFound(ctx.Request.URI().PathOriginal()), filters.KindUnknown)
		return
	}
	i := bytes.IndexByte(rest, '/')
	if len(rest) == 0 || i == 0 {
		l.writeError(ctx, filters.NewError(filters.ErrCodePubSubEmpty, fasthttp.StatusNotFound, 3, "pubsub name is empty"), filters.KindPublish)
		return
	}
	if i < 0 || i == len(rest)-1 {
		l.writeError(ctx, filters.NewError(filters.ErrCodePubSubTopicEmpty, fasthttp.StatusNotFound, 3, "topic is empty in pubsub %s", rest[:max(i, len(rest))]), filters.KindPublish)
		return
	}
	ex := filters.AcquireExchange(false)
	ex.Protocol = filters.ProtocolHTTP
	ex.Listener = l.name
	ex.Req = &ctx.Request
	ex.Resp = &ctx.Response
	ex.SetPublish(false, rest[:i], rest[i+1:])
	ex.Bulk = bulk
	ex.SetRemoteAddr(remoteIP(ctx))
	if err := l.chain.Load().Handle(ctx, ex); err != nil {
		l.writeError(ctx, err, filters.KindPublish)
	}
	filters.ReleaseExchange(ex)
}

func (l *Listener) healthz(ctx *fasthttp.RequestCtx, ok bool) {
	if ok {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	code := filters.ErrCodeHealthNotReady
	if bytes.Equal(ctx.Request.URI().PathOriginal(), pOutbound) {
		code = filters.ErrCodeOutboundNotReady
	}
	writeJSONError(&ctx.Response, fasthttp.StatusInternalServerError, code, "dapr is not ready")
}

func (l *Listener) metadata(ctx *fasthttp.RequestCtx) {
	b, err := json.Marshal(l.rt.Metadata())
	if err != nil {
		writeJSONError(&ctx.Response, fasthttp.StatusInternalServerError, filters.ErrCodeInternal, err.Error())
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func errNotFound(path []byte) error {
	return filters.NewError(filters.ErrCodeNotFound, fasthttp.StatusNotFound, 5, "method %s not found: no Dapr API route matches", path)
}

// writeError answers with a Dapr-style error body.
func (l *Listener) writeError(ctx *fasthttp.RequestCtx, err error, kind filters.Kind) {
	e := filters.AsError(err, kind)
	ctx.Response.Reset()
	writeJSONError(&ctx.Response, e.HTTPStatus, e.Code, e.Message)
}

func writeJSONError(resp *fasthttp.Response, status int, code, msg string) {
	resp.SetStatusCode(status)
	resp.Header.SetContentType("application/json")
	m, _ := json.Marshal(msg)
	b := make([]byte, 0, 32+len(code)+len(m))
	b = append(b, `{"errorCode":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"message":`...)
	b = append(b, m...)
	b = append(b, '}')
	resp.SetBodyRaw(b)
}

// serveError answers requests fasthttp could not parse (a body over the
// limit above all) with Dapr-style errors.
func (l *Listener) serveError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		writeJSONError(&ctx.Response, fasthttp.StatusRequestEntityTooLarge, filters.ErrCodeBodyTooLarge,
			"request body too large: the limit is --dapr-http-max-request-size")
		return
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) && netErr.Timeout() {
		writeJSONError(&ctx.Response, fasthttp.StatusRequestTimeout, filters.ErrCodeMalformedRequest, "request timeout")
		return
	}
	writeJSONError(&ctx.Response, fasthttp.StatusBadRequest, filters.ErrCodeMalformedRequest, "malformed request: "+err.Error())
}

// invokeTarget finds the app id and method of a service invocation as
// daprd does: the dapr-app-id header first, then HTTP Basic auth with user
// dapr-app-id (both on any path, the whole path being the method, repeated
// slashes collapsed), then /v1.0/invoke/<id>/method/<method> (the method
// may be empty). ok is false when the request is not an invocation.
func invokeTarget(path []byte, h *fasthttp.RequestHeader) (id, method []byte, ok bool) {
	id = h.Peek(hAppID)
	if len(id) == 0 {
		id = basicAuthAppID(h)
	}
	if len(id) > 0 {
		return id, cleanMethod(path), true
	}
	if !bytes.HasPrefix(path, pInvoke) {
		return nil, nil, false
	}
	rest := path[len(pInvoke):]
	i := bytes.IndexByte(rest, '/')
	if i <= 0 || !bytes.HasPrefix(rest[i:], pMethod[:len(pMethod)-1]) {
		return nil, nil, false
	}
	after := rest[i+len(pMethod)-1:]
	if len(after) == 0 {
		return nil, nil, false // "/method" with no slash: not a route
	}
	return rest[:i], after[1:], true
}

// cleanMethod drops leading slashes and collapses repeated ones. It only
// allocates when the path has repeated slashes.
func cleanMethod(path []byte) []byte {
	for len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	if !bytes.Contains(path, []byte("//")) {
		return path
	}
	out := make([]byte, 0, len(path))
	for i, c := range path {
		if c == '/' && i > 0 && path[i-1] == '/' {
			continue
		}
		out = append(out, c)
	}
	return out
}

// basicAuthAppID returns the app id of "Authorization: Basic
// base64(dapr-app-id:<id>)", or nil.
func basicAuthAppID(h *fasthttp.RequestHeader) []byte {
	auth := h.Peek("Authorization")
	if len(auth) < 6 || !bytes.EqualFold(auth[:6], []byte("basic ")) {
		return nil
	}
	dec, err := base64.StdEncoding.DecodeString(string(auth[6:]))
	if err != nil || !bytes.HasPrefix(dec, basicUser) || len(dec) == len(basicUser) {
		return nil
	}
	return dec[len(basicUser):]
}

func remoteIP(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a
}

type zapPrintf struct{ log *zap.Logger }

func (z zapPrintf) Printf(format string, args ...any) { z.log.Sugar().Debugf(format, args...) }
