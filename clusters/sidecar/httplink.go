package sidecar

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

// A peer sidecar that is switchyard offers the peer link on its internal
// port (peerhttp). Unary invocations of such an endpoint go over one
// multiplexed connection instead of grpc-go: many calls share it, and what
// several calls send at about the same time leaves in one write. gRPC
// proxying streams stay on HTTP/2.

// linkIdle is how long an unused link connection is kept. The callee keeps
// it for as long as the caller does.
const linkIdle = 30 * time.Second

// link returns the link client of the endpoint's address, made on first use
// and shared by every cluster with an endpoint there.
func (s *sharedConn) link(connectTimeout, keepalive time.Duration) *peerhttp.Client {
	if lc := s.lc.Load(); lc != nil {
		return lc
	}
	dialer := &net.Dialer{Timeout: connectTimeout}
	lc := peerhttp.NewClient(s.addr, func(ctx context.Context) (net.Conn, error) {
		return rawio.Wrapped(dialer.DialContext(ctx, "tcp", s.addr))
	}, linkIdle, keepalive)
	if s.lc.CompareAndSwap(nil, lc) {
		return lc
	}
	lc.Close()
	return s.lc.Load()
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
	lc := ep.shared.link(c.opts.ConnectTimeout, c.opts.PeerKeepalive)
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

	if dl, ok := ctx.Deadline(); ok {
		// The callee's chain gets the deadline, as from a CallLocal's
		// grpc-timeout (rounded up, as grpc-go does).
		var b [20]byte
		us := max((time.Until(dl)+time.Microsecond-1)/time.Microsecond, 1)
		h.SetBytesKV(hdrTimeoutB, strconv.AppendInt(b[:0], int64(us), 10))
	} else {
		h.DelBytes(hdrTimeoutB)
	}
	if err := lc.Do(ctx, req, ex.Resp); err != nil {
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
// that is not a refused connection or the call's own deadline.
func (c *Cluster) linkError(ep *endpoint, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, peerhttp.ErrNotSent):
		// notSent recognises it: the call may go again, anywhere.
		return status.Error(codes.Unavailable, err.Error())
	}
	ep.shared.linkOK.Store(false)
	return status.Error(codes.Unavailable, err.Error())
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
// the multiplexed link (a peer that offers only version 1 stays on gRPC).
func (ep *endpoint) noteOffer(md metadata.MD) {
	for _, v := range md.Get(peerhttp.MDOffer) {
		if v == peerhttp.MuxVersion {
			ep.shared.linkOK.Store(true)
			return
		}
	}
}
