package sidecar

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
)

// A peer sidecar that is switchyard offers HTTP/1.1 on its internal port
// (peerhttp). Unary invocations of such an endpoint go over a pooled
// keep-alive fasthttp client instead of grpc-go, which costs each of the two
// sidecars about half the CPU per call; gRPC proxying streams stay on gRPC.

// linkIdle is how long an idle link connection is kept. The callee keeps
// them longer (peerhttp's server side), so the caller is the one to close.
const linkIdle = 30 * time.Second

// link returns the HTTP/1.1 client of the endpoint's address, made on first
// use and shared by every cluster with an endpoint there.
func (s *sharedConn) link(connectTimeout time.Duration) *fasthttp.HostClient {
	if hc := s.hc.Load(); hc != nil {
		return hc
	}
	dialer := &fasthttp.TCPDialer{}
	hc := &fasthttp.HostClient{
		Addr:                          s.addr,
		MaxConns:                      1024,
		MaxIdleConnDuration:           linkIdle,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		Dial: func(a string) (net.Conn, error) {
			c, err := dialer.DialTimeout(a, connectTimeout)
			if err != nil {
				return nil, err
			}
			return &linkConn{Conn: c, fd: socketOf(c)}, nil
		},
		// Only a kept-alive connection the callee closed while it was idle
		// (it restarted, say), found before a byte of the request was
		// written, is tried again here, on a new connection, since the
		// other idle ones are likely as stale. A connection closed after
		// the request was written may have delivered it to the app: that,
		// like every other failure, is the cluster's to retry, by daprd's
		// rules.
		RetryIfErr: func(_ *fasthttp.Request, _ int, err error) (bool, bool) {
			if !errors.Is(err, errStaleConn) {
				return false, false
			}
			if hc := s.hc.Load(); hc != nil {
				hc.CloseIdleConnections()
			}
			return false, true
		},
	}
	if s.hc.CompareAndSwap(nil, hc) {
		return hc
	}
	return s.hc.Load()
}

// errStaleConn is a kept-alive link connection the peer closed (or wrote
// to) while it was idle, found before anything was sent on it.
var errStaleConn = errors.New("sidecar: kept-alive link connection closed by the peer")

// linkConn is a link connection that, before the first write of a request
// on a connection that has carried one already, checks that the peer has
// not closed it meanwhile: a request written there would be lost, and
// whether the peer read it could no longer be told.
type linkConn struct {
	net.Conn
	fd     int  // the socket, for the peek (-1: none)
	reused bool // a response was read: the next write starts a new request
}

func (c *linkConn) Read(p []byte) (int, error) {
	c.reused = true
	return c.Conn.Read(p)
}

func (c *linkConn) Write(p []byte) (int, error) {
	if c.reused {
		c.reused = false
		if idleClosed(c.fd) {
			return 0, errStaleConn
		}
	}
	return c.Conn.Write(p)
}

var (
	hdrCallerB   = []byte(grpcwire.MDCallerID)
	hdrCalleeB   = []byte(grpcwire.MDCalleeID)
	hdrCallerNSB = []byte(grpcwire.MDCallerNS)
	hdrErrorB    = []byte(peerhttp.HeaderError)
	hdrGRPCCodeB = []byte(peerhttp.HeaderGRPCCode)
	hdrTimeoutB  = []byte(peerhttp.HeaderTimeout)
	trailerPfx   = []byte(peerhttp.TrailerPrefix)
)

// invokeHTTP sends the exchange over the endpoint's link and leaves the
// answer in ex.Resp. Transport failures come back as gRPC statuses, so that
// Handle retries and ejects the same way for both transports; the peer's
// own errors come back as *filters.Error.
func (c *Cluster) invokeHTTP(ctx context.Context, ep *endpoint, ex *filters.Exchange) error {
	hc := ep.shared.link(c.opts.ConnectTimeout)
	req := ex.Req
	h := &req.Header
	peerhttp.PrepareRequest(h)
	// Every value a client sent under these names goes, as over gRPC.
	h.DelBytes(hdrCallerB)
	h.AddBytesKV(hdrCallerB, c.selfID)
	h.DelBytes(hdrCalleeB)
	h.AddBytesKV(hdrCalleeB, c.appID)
	h.DelBytes(hdrCallerNSB)
	if len(c.selfNS) > 0 {
		h.AddBytesKV(hdrCallerNSB, c.selfNS)
	}
	buf := peerhttp.AppendPath(ex.Scratch[:0], ex.Method)
	if q := req.URI().QueryString(); len(q) > 0 {
		buf = append(buf, '?')
		buf = append(buf, q...)
	}
	ex.Scratch = buf
	req.SetRequestURIBytes(buf)
	h.SetHost(ep.addr)

	var err error
	if dl, ok := ctx.Deadline(); ok {
		// The callee's chain gets the deadline, as from a CallLocal's
		// grpc-timeout (rounded up, as grpc-go does).
		var b [20]byte
		us := max((time.Until(dl)+time.Microsecond-1)/time.Microsecond, 1)
		h.SetBytesKV(hdrTimeoutB, strconv.AppendInt(b[:0], int64(us), 10))
		err = hc.DoDeadline(req, ex.Resp, dl)
	} else {
		h.DelBytes(hdrTimeoutB)
		err = hc.Do(req, ex.Resp)
	}
	if err != nil {
		return c.linkError(ep, err)
	}
	resp := ex.Resp
	if !peerhttp.IsLinkResponse(&resp.Header) {
		// Whatever answered is not a switchyard sidecar (any more): back to
		// gRPC, which learns again whether the peer offers the link.
		ep.shared.linkOK.Store(false)
		return status.Errorf(codes.Unavailable, "peer %s answered HTTP/1.1 without the link marker (status %d)", ep.addr, resp.StatusCode())
	}
	if code := resp.Header.PeekBytes(hdrErrorB); len(code) > 0 {
		gc, _ := strconv.Atoi(string(resp.Header.PeekBytes(hdrGRPCCodeB)))
		return &filters.Error{Code: string(code), HTTPStatus: resp.StatusCode(), GRPCCode: codes.Code(gc),
			Message: string(resp.Body())}
	}
	takeTrailers(ex)
	return nil
}

// linkError maps a transport failure of the link to the status the gRPC
// transport would have given, and stops using the link after a failure
// that is not a refused connection.
func (c *Cluster) linkError(ep *endpoint, err error) error {
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial", errors.Is(err, fasthttp.ErrDialTimeout):
		// notSent recognises "while dialing": the request never left.
		return status.Errorf(codes.Unavailable, "connection error: while dialing %s: %v", ep.addr, err)
	case errors.Is(err, fasthttp.ErrTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return status.Errorf(codes.ResourceExhausted, "peer %s: %v", ep.addr, err)
	}
	ep.shared.linkOK.Store(false)
	if errors.Is(err, fasthttp.ErrConnectionClosed) {
		return status.Errorf(codes.Unavailable, "peer %s closed the connection before answering", ep.addr)
	}
	return status.Errorf(codes.Unavailable, "peer %s: %v", ep.addr, err)
}

// takeTrailers moves the gRPC trailers the peer sent as headers into the
// exchange, as the gRPC transport's response does.
func takeTrailers(ex *filters.Exchange) {
	h := &ex.Resp.Header
	var md metadata.MD
	var keys [][]byte
	for k, v := range h.All() {
		if len(k) <= len(trailerPfx) || !bytes.EqualFold(k[:len(trailerPfx)], trailerPfx) {
			continue
		}
		keys = append(keys, append([]byte(nil), k...))
		name := string(bytes.ToLower(k[len(trailerPfx):]))
		val := string(v)
		if bytes.HasSuffix([]byte(name), []byte("-bin")) {
			d, err := base64.StdEncoding.DecodeString(val)
			if err != nil {
				continue
			}
			val = string(d)
		}
		if md == nil {
			md = metadata.MD{}
		}
		md[name] = append(md[name], val)
	}
	for _, k := range keys {
		h.DelBytes(k)
	}
	if len(md) > 0 {
		ex.SetValue(grpcwire.TrailerKey, md)
	}
}

// noteOffer records whether a CallLocal answer's header metadata offered
// the link.
func (ep *endpoint) noteOffer(md metadata.MD) {
	for _, v := range md.Get(peerhttp.MDOffer) {
		if v == peerhttp.Version {
			ep.shared.linkOK.Store(true)
			return
		}
	}
}
