package internalgrpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// The internal port also speaks HTTP/1.1 to switchyard peers (the link,
// internal/peerhttp). Each accepted connection is sorted by its first bytes:
// the HTTP/2 preface goes to the gRPC server, anything else to the link's
// fasthttp server.

// sniffTimeout bounds the wait for a new connection's first bytes.
const sniffTimeout = 10 * time.Second

// linkIdle is how long the callee keeps an idle link connection: longer
// than the caller does, so that the caller is the one that closes.
const linkIdle = 2 * time.Minute

var h2Preface = []byte("PRI ")

// mux splits one bound listener into a gRPC and an HTTP/1.1 listener.
type mux struct {
	ln   net.Listener
	grpc *listeners.ChanListener
	http *listeners.ChanListener
	mux  *peerhttp.Server // the multiplexed link (nil: not served)
	log  *zap.Logger
	wg   sync.WaitGroup
}

func newMux(ln net.Listener, link2 *peerhttp.Server, log *zap.Logger) *mux {
	m := &mux{ln: ln, log: log, mux: link2,
		grpc: listeners.NewChanListener(ln.Addr()), http: listeners.NewChanListener(ln.Addr())}
	// Closing either side closes both and the port.
	m.grpc.OnClose = func() { _ = m.ln.Close(); _ = m.http.Close() }
	m.http.OnClose = func() { _ = m.ln.Close(); _ = m.grpc.Close() }
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_ = listeners.AcceptLoop(m.ln, m.grpc.Done(), func(c net.Conn) { go m.sort(c) })
		_ = m.Close()
	}()
	return m
}

// sort reads a connection's first four bytes and hands it on.
func (m *mux) sort(c net.Conn) {
	var head [4]byte
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	n, err := io.ReadFull(c, head[:])
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		_ = c.Close()
		return
	}
	if m.mux != nil && (string(head[:n]) == peerhttp.MuxPreface || string(head[:n]) == peerhttp.MuxPrefaceV2) {
		m.mux.ServeConn(c)
		return
	}
	pc := &listeners.PrefixConn{Conn: c, Head: head[:n]}
	to := m.http
	if bytes.Equal(head[:n], h2Preface) {
		to = m.grpc
	}
	to.Push(pc)
}

// Close stops accepting; connections already handed on are the servers'.
func (m *mux) Close() error { return m.grpc.Close() }

// newLinkServer is the fasthttp server of the link. Header names are
// normalized as on the HTTP API listener, so that the chain and the app
// cluster find them whatever case the caller used.
func (l *Listener) newLinkServer(maxBody int, log *zap.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      l.serveLink,
		ErrorHandler:                 linkBadRequest,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		NoDefaultDate:                true,
		DisablePreParseMultipartForm: true,
		MaxRequestBodySize:           maxBody,
		ReadBufferSize:               16 << 10,
		WriteBufferSize:              16 << 10,
		IdleTimeout:                  linkIdle,
		CloseOnShutdown:              true,
		Logger:                       zapPrintf{log},
	}
}

type zapPrintf struct{ log *zap.Logger }

func (z zapPrintf) Printf(format string, args ...any) { z.log.Sugar().Debugf(format, args...) }

// serveLink serves a request of the link's version 1 (one call per
// connection at a time, plain HTTP/1.1).
func (l *Listener) serveLink(ctx *fasthttp.RequestCtx) {
	l.invokeLink(l.linkCtx, &ctx.Request, &ctx.Response, ctx.RemoteIP())
}

// serveMux serves a call of the multiplexed link (version 2); ctx ends when
// the caller cancels it.
func (l *Listener) serveMux(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, remote net.Addr, err error) {
	if err != nil {
		writeBadRequest(resp, err)
		return
	}
	var ip net.IP
	if ta, ok := remote.(*net.TCPAddr); ok {
		ip = ta.IP
	}
	l.invokeLink(ctx, req, resp, ip)
}

// invokeLink invokes our app with a request a switchyard peer sent over the
// link: the same exchange CallLocal would build, the same chain, under cctx
// and the caller's deadline.
func (l *Listener) invokeLink(cctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, remoteIP net.IP) {
	if !peerhttp.IsLinkRequest(&req.Header) {
		writeLinkError(resp, filters.NewError(filters.ErrCodeDirectInvoke, fasthttp.StatusBadRequest, 3,
			"internal: this port serves the internal gRPC API and switchyard's peer link only"))
		return
	}
	l.linkServed.Add(1)
	ex := filters.AcquireExchange(false)
	defer filters.ReleaseExchange(ex)
	method, ok := peerhttp.AppendMethod(ex.Scratch[:0], req.URI().PathOriginal())
	if !ok {
		writeLinkError(resp, filters.NewError(filters.ErrCodeDirectInvoke, fasthttp.StatusBadRequest, 3,
			"internal: malformed method in %q", req.URI().PathOriginal()))
		return
	}
	ex.Scratch = method
	ex.Protocol = filters.ProtocolInternal
	ex.Listener = l.name
	ex.Req = req
	ex.Resp = resp
	// Copies: the header's own buffers change as the chain edits headers.
	ex.SetCaller(req.Header.Peek(grpcwire.MDCallerID), req.Header.Peek(grpcwire.MDCallerNS))
	ip, _ := netip.AddrFromSlice(remoteIP)
	ex.SetRemoteAddr(ip.Unmap())
	ex.SetInvoke(l.appID, method)
	// SetInvoke copied the method into the route key: Scratch is free again.
	if us, err := fasthttp.ParseUint(req.Header.PeekBytes(timeoutB)); err == nil && us > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(cctx, time.Duration(us)*time.Microsecond)
		defer cancel()
	}
	peerhttp.CleanRequest(&req.Header)
	if err := l.chain.Load().Handle(cctx, ex); err != nil {
		resp.Reset()
		writeLinkError(resp, filters.AsError(err, filters.KindInvoke))
		return
	}
	peerhttp.CleanResponse(&resp.Header)
	if md, ok := ex.Value(grpcwire.TrailerKey).(metadata.MD); ok {
		for k, vs := range md {
			name := peerhttp.TrailerPrefix + k
			for _, v := range vs {
				if strings.HasSuffix(k, "-bin") {
					v = base64.StdEncoding.EncodeToString([]byte(v))
				}
				resp.Header.Add(name, v)
			}
		}
	}
}

var timeoutB = []byte(peerhttp.HeaderTimeout)

// writeLinkError answers a link request with one of our own errors.
func writeLinkError(resp *fasthttp.Response, e *filters.Error) {
	resp.SetStatusCode(e.HTTPStatus)
	resp.Header.Set(peerhttp.HeaderLink, peerhttp.Version)
	resp.Header.Set(peerhttp.HeaderError, e.Code)
	resp.Header.Set(peerhttp.HeaderGRPCCode, strconv.Itoa(int(e.GRPCCode)))
	resp.SetBodyString(e.Message)
}

// linkBadRequest answers what fasthttp could not parse (headers too large,
// a body over the limit, ...).
func linkBadRequest(ctx *fasthttp.RequestCtx, err error) { writeBadRequest(&ctx.Response, err) }

// writeBadRequest answers a request of either form of the link that could
// not be read.
func writeBadRequest(resp *fasthttp.Response, err error) {
	status := fasthttp.StatusBadRequest
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		status = fasthttp.StatusRequestEntityTooLarge
	}
	writeLinkError(resp, filters.NewError(filters.ErrCodeDirectInvoke, status, 3, "internal: bad request: %v", err))
}
