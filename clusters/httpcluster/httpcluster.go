// Package httpcluster is the cluster for HTTP upstreams: the local app of an
// HTTP sidecar, or any set of HTTP endpoints a route names. It rewrites the
// exchange's request for the app (path = the invoked method, query kept),
// drops hop-by-hop headers, sets daprd's forwarding headers, and sends it
// over a pooled keep-alive fasthttp client per endpoint.
package httpcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/clusters/internal/limit"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

// Options configure a cluster.
type Options struct {
	Name           string
	AppID          string // our own app id: dapr-callee-app-id for the local app, caller id for self-invocation
	Endpoints      []string
	LBPolicy       string // round_robin (default) | least_request | random
	MaxConcurrency int    // 0: unlimited (--app-max-concurrency)
	MaxConns       int    // per endpoint; 0: 1024
	// PipelineConns > 0 pipelines HTTP/1.1 requests over that many
	// connections per endpoint, in batches, while the app answers them
	// quickly (pipeClient): fewer syscalls for the proxy and the app.
	PipelineConns int
	// PipelineStall: a pipelined connection whose answer has been waited
	// on this long with none read meanwhile is passed over, and a busy one
	// is joined only while the wait there looks under half of it
	// (0: DefaultPipelineStall).
	PipelineStall  time.Duration
	ConnectTimeout time.Duration
	Timeout        time.Duration // per request unless the route sets one; 0: none
	AppAPIToken    string        // sent as dapr-api-token (APP_API_TOKEN)
	// Eject is how long an endpoint that refused a connection is skipped (0: 5 s).
	Eject time.Duration
	// Stats, when set, counts what the pipelining client does
	// (app_pipeline_requests_total, app_pipeline_backoffs_total).
	Stats *stats.Registry
}

// doer is what both clients offer: fasthttp's HostClient and the
// pipelining pipeClient.
type doer interface {
	Do(req *fasthttp.Request, resp *fasthttp.Response) error
	DoTimeout(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error
}

type endpoint struct {
	client   doer
	host     []byte
	inflight atomic.Int64
	ejected  atomic.Int64 // unix nanos until which the endpoint is skipped
}

// Cluster is an HTTP cluster.
type Cluster struct {
	opts     Options
	eps      []*endpoint
	sem      limit.Gate
	rr       atomic.Uint32
	leastReq bool
	random   bool
	appID    []byte
	appToken []byte
	eject    time.Duration
	closed   atomic.Bool
}

var _ filters.Handler = (*Cluster)(nil)

// New builds a cluster. It dials nothing until the first request.
func New(o Options) (*Cluster, error) {
	if len(o.Endpoints) == 0 {
		return nil, fmt.Errorf("httpcluster: %s: no endpoints", o.Name)
	}
	c := &Cluster{opts: o, appID: []byte(o.AppID), appToken: []byte(o.AppAPIToken), eject: o.Eject}
	if c.eject == 0 {
		c.eject = 5 * time.Second
	}
	switch o.LBPolicy {
	case "", "round_robin":
	case "least_request":
		c.leastReq = true
	case "random":
		c.random = true
	default:
		return nil, fmt.Errorf("httpcluster: %s: unknown lb_policy %q", o.Name, o.LBPolicy)
	}
	c.sem = limit.New(o.MaxConcurrency)
	maxConns := o.MaxConns
	if maxConns <= 0 {
		maxConns = 1024
	}
	ct := o.ConnectTimeout
	if ct <= 0 {
		ct = 5 * time.Second
	}
	for _, addr := range o.Endpoints {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("httpcluster: %s: endpoint %q: %w", o.Name, addr, err)
		}
		dialer := &fasthttp.TCPDialer{Concurrency: 0}
		dial := func(a string) (net.Conn, error) { return rawio.Wrapped(dialer.DialTimeout(a, ct)) }
		hc := &fasthttp.HostClient{
			Addr:                          addr,
			MaxConns:                      maxConns,
			MaxIdleConnDuration:           60 * time.Second,
			ReadBufferSize:                8192,
			WriteBufferSize:               8192,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			Dial:                          dial,
		}
		if o.PipelineConns > 0 {
			stall := o.PipelineStall
			if stall <= 0 {
				stall = DefaultPipelineStall
			}
			pc := newPipeClient(addr, o.PipelineConns, dial, hc, stall)
			if o.Stats != nil {
				pc.countInto(o.Stats, o.AppID, o.Name)
			}
			c.eps = append(c.eps, &endpoint{host: []byte(addr), client: pc})
			continue
		}
		c.eps = append(c.eps, &endpoint{host: []byte(addr), client: hc})
	}
	return c, nil
}

// DefaultPipelineStall is how long a pipelined connection may wait on an
// answer, with none read meanwhile, before requests pass it over.
const DefaultPipelineStall = 10 * time.Millisecond

// Close releases idle connections. In-flight requests finish.
func (c *Cluster) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	for _, ep := range c.eps {
		switch cl := ep.client.(type) {
		case *fasthttp.HostClient:
			cl.CloseIdleConnections()
		case *pipeClient:
			cl.Close()
			if hc, ok := cl.around.(*fasthttp.HostClient); ok {
				hc.CloseIdleConnections()
			}
		}
	}
	return nil
}

const (
	hdrCaller     = "dapr-caller-app-id"
	hdrCallee     = "dapr-callee-app-id"
	hdrToken      = "dapr-api-token"
	hdrXFF        = "X-Forwarded-For"
	hdrXFHost     = "X-Forwarded-Host"
	hdrForwarded  = "Forwarded"
	hdrConnection = "Connection"
)

// Handle sends the exchange to one endpoint and leaves the app's answer in
// ex.Resp.
func (c *Cluster) Handle(ctx context.Context, ex *filters.Exchange) error {
	if ex.Stream != nil {
		return filters.ErrStreamUnsupported
	}
	timeout := ex.Timeout
	if timeout == 0 {
		timeout = c.opts.Timeout
	}
	if c.sem != nil {
		// The route timeout covers the wait for a slot and the request.
		waited, err := c.sem.Acquire(ctx, timeout)
		if err != nil {
			return c.fail(ex, err, limit.Code(err))
		}
		defer c.sem.Release()
		if timeout > 0 {
			if timeout -= waited; timeout <= 0 {
				return c.fail(ex, limit.ErrTimeout, codes.DeadlineExceeded)
			}
		}
	}
	req := ex.Req
	ep := c.pick()
	c.rewrite(ex, req, ep.host)
	ep.inflight.Add(1)
	var err error
	if timeout > 0 {
		err = ep.client.DoTimeout(req, ex.Resp, timeout)
	} else {
		err = ep.client.Do(req, ex.Resp)
	}
	ep.inflight.Add(-1)
	if err != nil {
		gc := codes.Internal
		switch {
		case errors.Is(err, fasthttp.ErrTimeout):
			gc = codes.DeadlineExceeded
		case isRefused(err):
			ep.ejected.Store(time.Now().Add(c.eject).UnixNano())
			gc = codes.Unavailable
		case errors.Is(err, fasthttp.ErrNoFreeConns), errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, fasthttp.ErrPipelineOverflow),
			errors.Is(err, errPipelineClosedByApp), errors.Is(err, errPipeNotSent), errors.Is(err, errPipeIdleClosed):
			gc = codes.Unavailable
		}
		return c.fail(ex, err, gc)
	}
	ex.Resp.Header.ResetConnectionClose()
	delFold(&ex.Resp.Header, hdrConnectionB)
	delFold(&ex.Resp.Header, hdrKeepAliveB)
	return nil
}

var (
	hdrConnectionB = []byte(hdrConnection)
	hdrKeepAliveB  = []byte("Keep-Alive")
)

// delFold deletes the response header name in any case: the clients keep
// the app's header names as they came (normalizing is off), and many
// servers write them in lower case.
func delFold(h *fasthttp.ResponseHeader, name []byte) {
	for {
		var key []byte
		for k := range h.All() {
			if bytes.EqualFold(k, name) {
				key = k
				break
			}
		}
		if key == nil {
			return
		}
		n := h.Len()
		if h.DelBytes(key); h.Len() == n {
			return // not deletable under this spelling: do not loop
		}
	}
}

func (c *Cluster) fail(ex *filters.Exchange, err error, gc codes.Code) error {
	return filters.NewError(filters.ErrCodeDirectInvoke, http.StatusInternalServerError, gc,
		"failed to invoke, id: %s, err: %v", ex.AppID, err)
}

// rewrite turns the listener's request into the app's: path "/<method>",
// same query, no hop-by-hop headers, forwarding and Dapr headers set.
//
// Exchanges' requests keep header names in canonical form (every listener
// normalizes them), so one pass over the headers finds what is needed and
// the headers are set under their canonical names without normalizing
// again: this runs on every request.
func (c *Cluster) rewrite(ex *filters.Exchange, req *fasthttp.Request, upstream []byte) {
	hdr := &req.Header
	var hasHop bool
	var nCaller, nCallee, nToken int
	var prevFwd, prevXFF, prevXFHost []byte
	for k, v := range hdr.All() {
		switch {
		case grpcwire.HopByHop(k):
			hasHop = true
		case len(k) == len(hdrCallerB) && bytes.EqualFold(k, hdrCallerB):
			nCaller++
		case len(k) == len(hdrCalleeB) && bytes.EqualFold(k, hdrCalleeB):
			nCallee++
		case len(k) == len(hdrTokenB) && bytes.EqualFold(k, hdrTokenB):
			nToken++
		case len(k) == len(hdrForwarded) && bytes.EqualFold(k, hdrForwardedB):
			prevFwd = v
		case len(k) == len(hdrXFF) && bytes.EqualFold(k, hdrXFFB):
			prevXFF = v
		case len(k) == len(hdrXFHost) && bytes.EqualFold(k, hdrXFHostB):
			prevXFHost = v
		}
	}
	if hasHop {
		grpcwire.DeleteHopByHop(hdr)
		// Deleting moved the values the pass found.
		prevFwd, prevXFF, prevXFHost = hdr.Peek(hdrForwarded), hdr.Peek(hdrXFF), hdr.Peek(hdrXFHost)
	}
	hdr.ResetConnectionClose()

	// The new URI and the Forwarded value are built in one reused buffer.
	buf := append(ex.Scratch[:0], '/')
	m := ex.Method
	if len(m) > 0 && m[0] == '/' {
		m = m[1:]
	}
	buf = append(buf, m...)
	if q := req.URI().QueryString(); len(q) > 0 {
		buf = append(buf, '?')
		buf = append(buf, q...)
	}
	uriEnd := len(buf)
	host := hdr.Host()
	// Forwarded (RFC 7239) and X-Forwarded-For are appended to what earlier
	// proxies set, as daprd does; X-Forwarded-Host keeps the first value.
	if len(prevFwd) > 0 {
		buf = append(buf, prevFwd...)
		buf = append(buf, ", "...)
	}
	buf = append(buf, "for="...)
	if bytes.IndexByte(ex.RemoteAddr, ':') >= 0 { // IPv6: quoted and bracketed
		buf = append(buf, `"[`...)
		buf = append(buf, ex.RemoteAddr...)
		buf = append(buf, `]"`...)
	} else {
		buf = append(buf, ex.RemoteAddr...)
	}
	if len(host) > 0 {
		buf = append(buf, ";host="...)
		buf = appendForwardedValue(buf, host)
	}
	fwdEnd := len(buf)
	if len(ex.RemoteAddr) > 0 {
		if len(prevXFF) > 0 {
			buf = append(buf, prevXFF...)
			buf = append(buf, ", "...)
		}
		buf = append(buf, ex.RemoteAddr...)
	}
	xffEnd := len(buf)
	ex.Scratch = buf
	// Host is read before the headers change: values live in the headers'
	// own buffers.
	if len(host) > 0 && len(prevXFHost) == 0 {
		hdr.SetCanonical(hdrXFHostB, host)
	}
	if len(ex.RemoteAddr) > 0 {
		hdr.SetCanonical(hdrXFFB, buf[fwdEnd:xffEnd])
	}
	if len(ex.RemoteAddr) > 0 || len(host) > 0 {
		hdr.SetCanonical(hdrForwardedB, buf[uriEnd:fwdEnd])
	}
	req.SetRequestURIBytes(buf[:uriEnd])
	hdr.SetHostBytes(upstream)

	// A client's extra values of the identity headers go: setting replaces
	// only the first.
	if nCaller > 1 {
		hdr.DelBytes(hdrCallerB)
	}
	if nCallee > 1 {
		hdr.DelBytes(hdrCalleeB)
	}
	if nToken > 1 {
		hdr.DelBytes(hdrTokenB)
		nToken = 0
	}
	if len(ex.CallerAppID) > 0 {
		hdr.SetCanonical(hdrCallerB, ex.CallerAppID)
	} else {
		hdr.SetCanonical(hdrCallerB, c.appID)
	}
	hdr.SetCanonical(hdrCalleeB, c.appID)
	if len(c.appToken) > 0 {
		hdr.SetCanonical(hdrTokenB, c.appToken)
	} else if nToken > 0 {
		hdr.DelBytes(hdrTokenB)
	}
}

// Canonical header names, as the listeners store them.
var (
	hdrForwardedB = []byte(hdrForwarded)
	hdrXFFB       = []byte(hdrXFF)
	hdrXFHostB    = []byte(hdrXFHost)
	hdrCallerB    = []byte("Dapr-Caller-App-Id")
	hdrCalleeB    = []byte("Dapr-Callee-App-Id")
	hdrTokenB     = []byte("Dapr-Api-Token")
)

func (c *Cluster) pick() *endpoint {
	if len(c.eps) == 1 {
		return c.eps[0]
	}
	now := time.Now().UnixNano()
	n := uint32(len(c.eps))
	if c.leastReq {
		var best *endpoint
		for _, ep := range c.eps {
			if ep.ejected.Load() > now {
				continue
			}
			if best == nil || ep.inflight.Load() < best.inflight.Load() {
				best = ep
			}
		}
		if best != nil {
			return best
		}
	}
	start := c.rr.Add(1)
	if c.random {
		start = uint32(now>>7) ^ start*2654435761
	}
	for i := uint32(0); i < n; i++ {
		ep := c.eps[(start+i)%n]
		if ep.ejected.Load() <= now {
			return ep
		}
	}
	return c.eps[start%n] // all ejected: try anyway
}

func isRefused(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, fasthttp.ErrDialTimeout)
}

// appendForwardedValue appends v as an RFC 7239 value: a token as it is,
// anything else (a host with a port, say) as a quoted string.
func appendForwardedValue(buf, v []byte) []byte {
	for _, c := range v {
		if !isTokenChar(c) {
			buf = append(buf, '"')
			for _, c := range v {
				if c == '"' || c == '\\' {
					buf = append(buf, '\\')
				}
				buf = append(buf, c)
			}
			return append(buf, '"')
		}
	}
	return append(buf, v...)
}

// isTokenChar reports whether c may appear in an RFC 7230 token.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
