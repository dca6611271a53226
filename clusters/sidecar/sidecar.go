// Package sidecar is the cluster kind "sidecar": the sidecars of one remote
// app id, reached over the internal gRPC API (dapr.proto.internals.v1
// ServiceInvocation). Its endpoints come from name resolution; it keeps one
// shared gRPC ClientConn per endpoint, balances round robin or least
// request, ejects endpoints that refuse connections for a while, retries as
// daprd does, and proxies gRPC streams (dapr-app-id) frame by frame.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	internalv1pb "github.com/dapr/dapr/pkg/proto/internals/v1"
	"go.uber.org/zap"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

func init() { clusters.RegisterKind(kind{}) }

type kind struct{}

var _ clusters.Builder = kind{}

func (kind) Kind() string { return config.ClusterSidecar }

// Build builds the sidecar cluster of cfg.AppID. A cluster created on first
// use takes its settings from a configured sidecar cluster of the same app
// id, when there is one.
func (kind) Build(cfg config.Cluster, env clusters.Env) (clusters.Cluster, error) {
	if env.Config != nil && len(cfg.Endpoints) == 0 && cfg.LBPolicy == "" {
		for _, c := range env.Config.Clusters {
			if c.Kind == config.ClusterSidecar && c.AppID == cfg.AppID {
				name := cfg.Name
				cfg = c
				cfg.Name = name
				break
			}
		}
	}
	return New(Options{
		Name: cfg.Name, AppID: cfg.AppID, Namespace: env.Namespace,
		SelfAppID: env.AppID, SelfNamespace: env.Namespace,
		Scheme: env.NameResolution.Scheme, ResolverConfig: env.NameResolution.Config,
		Endpoints: cfg.Endpoints, LBPolicy: cfg.LBPolicy,
		ConnectTimeout: cfg.ConnectTimeout.D(), Timeout: cfg.Timeout.D(),
		Link:          env.Config == nil || env.Config.InternalHTTPOn(),
		PeerKeepalive: env.Config.PeerKeepaliveD(),
		Logger:        env.Logger,
	})
}

// Options configure a sidecar cluster.
type Options struct {
	Name      string
	AppID     string // the remote app id
	Namespace string // its namespace
	// Our own identity, sent as dapr-caller-app-id / dapr-caller-namespace.
	SelfAppID     string
	SelfNamespace string
	// Name resolution, unless Endpoints are given.
	Scheme         string
	ResolverConfig map[string]any
	Endpoints      []string // fixed internal gRPC addresses (host:port)
	LBPolicy       string   // round_robin (default) | least_request
	ConnectTimeout time.Duration
	Timeout        time.Duration // per request unless the route sets one; 0: none
	// Retries is how many times a failed call is repeated (daprd: 3);
	// negative: never. Backoff is the constant wait before a retry
	// (daprd: 1 s), skipped when the retry can go to another endpoint.
	Retries int
	Backoff time.Duration
	// Eject is how long an endpoint that refused a connection is skipped
	// (0: 5 s).
	Eject time.Duration
	// Stream makes invocations use CallLocalStream, falling back to
	// CallLocal when the peer answers Unimplemented. By default CallLocal
	// is used: every peer implements it and it is one round trip.
	Stream bool
	// Link sends unary invocations over HTTP/1.1 to endpoints that offer
	// it (switchyard peers; see internal/peerhttp), gRPC to the others.
	Link bool
	// PeerKeepalive: a link connection, or an HTTP/2 connection of gRPC
	// proxying to a switchyard peer, whose calls wait and that heard nothing
	// for this long sends a PING, and is given up when that goes unanswered
	// as long again (0: never). The first cluster to use an address sets it
	// for the connections to that address.
	PeerKeepalive time.Duration
	Logger        *zap.Logger
}

type endpoint struct {
	addr     string
	shared   *sharedConn // from the process's pool of connections by address
	inflight atomic.Int64
	ejected  atomic.Int64 // unix nanos until which the endpoint is skipped
	noStream atomic.Bool  // the peer answered Unimplemented to CallLocalStream
}

// Cluster is a sidecar cluster.
type Cluster struct {
	opts     Options
	log      *zap.Logger
	leastReq bool
	eps      atomic.Pointer[[]*endpoint]
	resErr   atomic.Pointer[error]
	ready    chan struct{}
	readyOne sync.Once
	res      resolver.Resolver
	rr       atomic.Uint32
	mu       sync.Mutex // endpoint updates
	closed   atomic.Bool
	dialOpts []grpc.DialOption
	// Header values of the link, as bytes.
	selfID, appID, selfNS []byte
}

var _ clusters.Cluster = (*Cluster)(nil)

// Method names of the internal API.
const (
	methodCallLocal       = "/dapr.proto.internals.v1.ServiceInvocation/CallLocal"
	methodCallLocalStream = "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream"
)

// New builds a cluster and starts resolving. It dials nothing until the
// first request.
func New(o Options) (*Cluster, error) {
	if o.AppID == "" {
		return nil, errors.New("sidecar: app id is empty")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Retries == 0 {
		o.Retries = 3
	}
	if o.Backoff == 0 {
		o.Backoff = time.Second
	}
	if o.Eject == 0 {
		o.Eject = 5 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	c := &Cluster{opts: o, log: o.Logger.With(zap.String("scope", "cluster.sidecar"), zap.String("target_app_id", o.AppID)),
		ready: make(chan struct{}), selfID: []byte(o.SelfAppID), appID: []byte(o.AppID), selfNS: []byte(o.SelfNamespace)}
	switch o.LBPolicy {
	case "", "round_robin":
	case "least_request":
		c.leastReq = true
	default:
		return nil, fmt.Errorf("sidecar: %s: unknown lb_policy %q", o.Name, o.LBPolicy)
	}
	c.dialOpts = []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(rawio.DialContext),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: o.ConnectTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
		grpc.WithInitialWindowSize(1 << 20),
		grpc.WithInitialConnWindowSize(4 << 20),
	}
	empty := []*endpoint{}
	c.eps.Store(&empty)
	if len(o.Endpoints) > 0 {
		addrs := make([]resolver.Address, len(o.Endpoints))
		for i, a := range o.Endpoints {
			addrs[i] = resolver.Address{Addr: a}
		}
		_ = c.UpdateState(resolver.State{Addresses: addrs})
		return c, nil
	}
	b, ok := resolver.Get(o.Scheme)
	if !ok {
		return nil, fmt.Errorf("sidecar: name resolution scheme %q is not available in this build (have %v)", o.Scheme, resolver.Schemes())
	}
	res, err := b.Build(resolver.Target{AppID: o.AppID, Namespace: o.Namespace}, c,
		resolver.BuildOptions{Logger: o.Logger, Config: o.ResolverConfig})
	if err != nil {
		return nil, fmt.Errorf("sidecar: resolving %s: %w", o.AppID, err)
	}
	c.res = res
	return c, nil
}

// UpdateState installs a resolver's endpoints, keeping the connections of
// the ones that stay. It implements resolver.Sink.
func (c *Cluster) UpdateState(st resolver.State) error {
	c.mu.Lock()
	old := *c.eps.Load()
	byAddr := make(map[string]*endpoint, len(old))
	for _, ep := range old {
		byAddr[ep.addr] = ep
	}
	next := make([]*endpoint, 0, len(st.Addresses))
	for _, a := range st.Addresses {
		if ep, ok := byAddr[a.Addr]; ok {
			next = append(next, ep)
			delete(byAddr, a.Addr)
			continue
		}
		next = append(next, &endpoint{addr: a.Addr, shared: conns.acquire(a.Addr)})
	}
	c.eps.Store(&next)
	if len(next) > 0 {
		c.resErr.Store(nil)
	}
	c.mu.Unlock()
	if len(byAddr) > 0 {
		// Calls still running on removed endpoints finish first.
		time.AfterFunc(30*time.Second, func() {
			for _, ep := range byAddr {
				ep.drop()
			}
		})
	}
	c.readyOne.Do(func() { close(c.ready) })
	return nil
}

// ReportError records a resolver error; it is what requests fail with while
// there are no endpoints. It implements resolver.Sink.
func (c *Cluster) ReportError(err error) {
	c.resErr.Store(&err)
	c.readyOne.Do(func() { close(c.ready) })
}

// Close stops resolving and closes the connections.
func (c *Cluster) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if c.res != nil {
		c.res.Close()
	}
	for _, ep := range *c.eps.Load() {
		ep.drop()
	}
	return nil
}

func (ep *endpoint) conn(opts []grpc.DialOption) (*grpc.ClientConn, error) {
	return ep.shared.get(opts)
}

// failing reports whether the endpoint's connection is in
// TRANSIENT_FAILURE: calls on it fail at once without being sent.
func (ep *endpoint) failing() bool {
	cc := ep.shared.cur.Load()
	return cc != nil && cc.GetState() == connectivity.TransientFailure
}

// drop gives the endpoint's hold on its pooled connections back.
func (ep *endpoint) drop() { conns.release(ep.shared) }

// dropIf detaches cc if it is still the connection to the endpoint's
// address, so that the next call dials afresh.
func (ep *endpoint) dropIf(cc *grpc.ClientConn) { ep.shared.dropIf(cc) }

// drainConn is how long a dropped connection stays open for the calls
// still using it.
const drainConn = 10 * time.Second

// endpoints returns the current endpoints, waiting for the resolver's first
// answer.
func (c *Cluster) endpoints(ctx context.Context) ([]*endpoint, error) {
	select {
	case <-c.ready:
	default:
		t := time.NewTimer(c.opts.ConnectTimeout)
		select {
		case <-c.ready:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
			return nil, errors.New("name resolution gave no answer in time")
		}
	}
	eps := *c.eps.Load()
	if len(eps) == 0 {
		if e := c.resErr.Load(); e != nil {
			return nil, *e
		}
		return nil, resolver.ErrNoAddresses
	}
	return eps, nil
}

// pick chooses an endpoint, skipping ejected ones and avoid when others
// are available.
func (c *Cluster) pick(eps []*endpoint, avoid *endpoint) *endpoint {
	if len(eps) == 1 {
		return eps[0]
	}
	now := time.Now().UnixNano()
	usable := func(ep *endpoint) bool { return ep != avoid && ep.ejected.Load() <= now && !ep.failing() }
	n := uint32(len(eps))
	if c.leastReq {
		// Power of two choices would do for many endpoints; sidecar
		// clusters are small, so look at all of them.
		var best *endpoint
		start := c.rr.Add(1)
		for i := uint32(0); i < n; i++ {
			ep := eps[(start+i)%n]
			if !usable(ep) {
				continue
			}
			if best == nil || ep.inflight.Load() < best.inflight.Load() {
				best = ep
			}
		}
		if best != nil {
			return best
		}
	} else {
		start := c.rr.Add(1)
		for i := uint32(0); i < n; i++ {
			if ep := eps[(start+i)%n]; usable(ep) {
				return ep
			}
		}
	}
	// Everything ejected or avoided: prefer one that is not avoided.
	start := c.rr.Add(1)
	for i := uint32(0); i < n; i++ {
		if ep := eps[(start+i)%n]; ep != avoid {
			return ep
		}
	}
	return eps[0]
}

// healthyOther reports whether an endpoint other than ep is not ejected.
func healthyOther(eps []*endpoint, ep *endpoint) bool {
	now := time.Now().UnixNano()
	for _, e := range eps {
		if e != ep && e.ejected.Load() <= now {
			return true
		}
	}
	return false
}

// notSent reports whether a transport error happened before the request
// could reach the peer (the connection could not be made).
func notSent(st *status.Status) bool {
	if st.Code() != codes.Unavailable {
		return false
	}
	m := st.Message()
	return strings.Contains(m, "while dialing") || strings.Contains(m, peerhttp.ErrNotSent.Error()) || strings.Contains(m, "connection refused") ||
		strings.Contains(m, "no such host") || strings.Contains(m, "connect: ")
}

func (c *Cluster) fail(format string, args ...any) *filters.Error {
	return filters.NewError(filters.ErrCodeDirectInvoke, http.StatusInternalServerError, codes.Internal, format, args...)
}

func (c *Cluster) failCode(gc codes.Code, err error) *filters.Error {
	return filters.NewError(filters.ErrCodeDirectInvoke, grpcwire.HTTPStatusFromCode(gc), gc,
		"failed to invoke, id: %s, err: %v", c.opts.AppID, err)
}

// call is what one invocation allocates, pooled.
type call struct {
	req  internalv1pb.InternalInvokeRequest
	msg  commonv1pb.InvokeRequest
	data anypb.Any
	ext  commonv1pb.HTTPExtension
	md   grpcwire.MetaMap
	resp internalv1pb.InternalInvokeResponse
}

var callPool = sync.Pool{New: func() any {
	cl := &call{md: make(grpcwire.MetaMap, 16)}
	return cl
}}

// BuildRequest fills cl's request from the exchange: headers as metadata,
// the caller and callee ids, method, verb, query, content type and body
// (not copied: valid while the exchange is).
func (c *Cluster) buildRequest(ex *filters.Exchange, cl *call) *internalv1pb.InternalInvokeRequest {
	clear(cl.md)
	grpcwire.RequestHeadersToMeta(&ex.Req.Header, cl.md)
	delete(cl.md, grpcwire.MDCallerID)
	grpcwire.AddMeta(cl.md, grpcwire.MDCallerID, c.opts.SelfAppID)
	delete(cl.md, grpcwire.MDCalleeID)
	grpcwire.AddMeta(cl.md, grpcwire.MDCalleeID, c.opts.AppID)
	if c.opts.SelfNamespace != "" {
		delete(cl.md, grpcwire.MDCallerNS)
		grpcwire.AddMeta(cl.md, grpcwire.MDCallerNS, c.opts.SelfNamespace)
	}
	cl.ext.Verb = grpcwire.VerbOf(ex.Req.Header.Method())
	cl.ext.Querystring = string(ex.Req.URI().QueryString())
	cl.data.Value = ex.Req.Body()
	cl.msg.Method = string(ex.Method)
	cl.msg.ContentType = string(ex.Req.Header.ContentType())
	cl.msg.Data = &cl.data
	cl.msg.HttpExtension = &cl.ext
	cl.req.Ver = internalv1pb.APIVersion_V1
	cl.req.Metadata = cl.md
	cl.req.Message = &cl.msg
	return &cl.req
}

func (cl *call) release() {
	cl.data.Value = nil
	cl.resp.Reset()
	callPool.Put(cl)
}

// Handle invokes the remote app and leaves its answer in ex.Resp.
func (c *Cluster) Handle(ctx context.Context, ex *filters.Exchange) error {
	if ex.Stream != nil {
		return c.proxy(ctx, ex)
	}
	eps, err := c.endpoints(ctx)
	if err != nil {
		return c.fail("failed to invoke, id: %s, err: couldn't resolve address for %s: %v", c.opts.AppID, c.opts.AppID, err)
	}
	timeout := ex.Timeout
	if timeout == 0 {
		timeout = c.opts.Timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cl := callPool.Get().(*call)
	defer cl.release()
	var req *internalv1pb.InternalInvokeRequest // built for the first gRPC attempt
	var last *endpoint
	for attempt := 0; ; attempt++ {
		ep := c.pick(eps, last)
		last = ep
		var cc *grpc.ClientConn
		failing := false
		if c.opts.Link && ep.shared.linkOK.Load() {
			ep.inflight.Add(1)
			err = c.invokeHTTP(ctx, ep, ex)
			ep.inflight.Add(-1)
		} else {
			if req == nil {
				if attempt > 0 {
					peerhttp.DropLinkHeaders(&ex.Req.Header) // a failed link attempt set them
				}
				req = c.buildRequest(ex, cl)
			}
			if attempt > 0 {
				ex.Resp.Reset() // what a failed attempt over the link left
			}
			if cc, err = ep.conn(c.dialOpts); err != nil {
				return c.fail("failed to invoke, id: %s, err: %v", c.opts.AppID, err)
			}
			// A call on a connection in TRANSIENT_FAILURE fails at once and
			// is never sent: it may go to another endpoint whatever the
			// route says.
			failing = cc.GetState() == connectivity.TransientFailure
			ep.inflight.Add(1)
			err = c.invoke(ctx, ep, cc, req, ex, cl)
			ep.inflight.Add(-1)
		}
		if err == nil {
			return nil
		}
		var fe *filters.Error
		if errors.As(err, &fe) {
			return fe // the peer sidecar's own answer, over the link
		}
		st, ok := status.FromError(err)
		if !ok {
			return c.failCode(codes.Internal, err)
		}
		if fe, answered := grpcwire.ErrorFromStatus(st); answered {
			return fe // the peer sidecar's own answer
		}
		unsent := failing || notSent(st)
		code := st.Code()
		if code == codes.Unavailable {
			// Passive ejection: the endpoint's connection failed (refused,
			// reset, closed); skip it for a while and ask the resolver again.
			ep.ejected.Store(time.Now().Add(c.opts.Eject).UnixNano())
			if c.res != nil {
				c.res.ResolveNow()
			}
		}
		retry := (code == codes.Unavailable || code == codes.Unauthenticated) &&
			(unsent || ex.Idempotent) && attempt < c.opts.Retries && ctx.Err() == nil
		if !retry {
			return c.failCode(code, st.Err())
		}
		// As daprd: drop the connection before retrying.
		if cc != nil {
			ep.dropIf(cc)
		}
		if healthyOther(eps, ep) {
			continue // the retry goes to another endpoint: no reason to wait
		}
		t := time.NewTimer(c.opts.Backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return c.failCode(codes.DeadlineExceeded, ctx.Err())
		}
		eps = *c.eps.Load()
		if len(eps) == 0 {
			return c.failCode(code, st.Err())
		}
	}
}

// invoke makes one call on cc and maps the answer into ex.Resp.
func (c *Cluster) invoke(ctx context.Context, ep *endpoint, cc *grpc.ClientConn, req *internalv1pb.InternalInvokeRequest, ex *filters.Exchange, cl *call) error {
	resp := &cl.resp
	if c.opts.Stream && !ep.noStream.Load() {
		body, err := c.invokeStream(ctx, cc, req, resp)
		if status.Code(err) == codes.Unimplemented {
			ep.noStream.Store(true)
		} else {
			if err != nil {
				return err
			}
			return c.response(ex, resp, body)
		}
	}
	if c.opts.Link && !ep.shared.linkOK.Load() {
		// Learn from the answer's header metadata whether the peer offers
		// the HTTP/1.1 link.
		var md metadata.MD
		if err := cc.Invoke(ctx, methodCallLocal, req, resp, grpc.Header(&md)); err != nil {
			return err
		}
		ep.noteOffer(md)
	} else if err := cc.Invoke(ctx, methodCallLocal, req, resp); err != nil {
		return err
	}
	return c.response(ex, resp, resp.GetMessage().GetData().GetValue())
}

// invokeStream calls CallLocalStream: the request in one message, the
// answer in as many as the peer sends.
func (c *Cluster) invokeStream(ctx context.Context, cc *grpc.ClientConn, req *internalv1pb.InternalInvokeRequest, resp *internalv1pb.InternalInvokeResponse) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, methodCallLocalStream)
	if err != nil {
		return nil, err
	}
	// The body goes as the first payload, not inside the request.
	data := req.Message.Data
	req.Message.Data = nil
	err = s.SendMsg(&internalv1pb.InternalInvokeRequestStream{Request: req, Payload: &commonv1pb.StreamPayload{Data: data.GetValue()}})
	req.Message.Data = data
	if err != nil && !errors.Is(err, errEOF) {
		return nil, err
	}
	_ = s.CloseSend()
	var body []byte
	for i := 0; ; i++ {
		m := new(internalv1pb.InternalInvokeResponseStream)
		if err := s.RecvMsg(m); err != nil {
			if errors.Is(err, errEOF) && i > 0 {
				return body, nil
			}
			return nil, err
		}
		if i == 0 {
			if m.GetResponse() == nil {
				return nil, status.Error(codes.Internal, "sidecar: CallLocalStream: the first message has no response")
			}
			proto := m.GetResponse()
			resp.Status, resp.Headers, resp.Trailers, resp.Message = proto.Status, proto.Headers, proto.Trailers, proto.Message
			body = append(body, resp.GetMessage().GetData().GetValue()...)
		}
		body = append(body, m.GetPayload().GetData()...)
	}
}

// response maps an internal response into ex.Resp.
func (c *Cluster) response(ex *filters.Exchange, resp *internalv1pb.InternalInvokeResponse, body []byte) error {
	code := int(resp.GetStatus().GetCode())
	if code < 100 {
		// A gRPC status (a daprd peer in front of a gRPC app).
		if code != int(codes.OK) {
			st := status.New(codes.Code(code), resp.GetStatus().GetMessage())
			return filters.NewError(filters.ErrCodeDirectInvoke, grpcwire.HTTPStatusFromCode(st.Code()), st.Code(), "%s", st.Message())
		}
		code = http.StatusOK
	}
	r := ex.Resp
	r.SetStatusCode(code)
	grpcwire.MetaToResponseHeaders(resp.GetHeaders(), &r.Header)
	if ct := resp.GetMessage().GetContentType(); ct != "" {
		r.Header.SetContentType(ct)
	}
	r.SetBody(body)
	if len(resp.GetTrailers()) > 0 {
		ex.SetValue(grpcwire.TrailerKey, grpcwire.MetaToMD(resp.GetTrailers()))
	}
	return nil
}

// proxy opens a stream with the same method and metadata on a peer
// sidecar's internal port and pumps frames both ways.
func (c *Cluster) proxy(ctx context.Context, ex *filters.Exchange) error {
	if st, ok := ex.Stream.Native().(*h2proxy.Stream); ok {
		return c.bridge(ctx, st)
	}
	ss, ok := ex.Stream.Native().(grpc.ServerStream)
	if !ok {
		return filters.ErrStreamUnsupported
	}
	eps, err := c.endpoints(ctx)
	if err != nil {
		return c.fail("failed to proxy request: couldn't resolve address for %s: %v", c.opts.AppID, err)
	}
	out := grpcwire.OutgoingFromIncoming(grpcwire.IncomingMD(ctx, ex.Stream))
	out.Set(grpcwire.MDCallerID, c.opts.SelfAppID)
	out.Set(grpcwire.MDCalleeID, c.opts.AppID)
	if out.Get(grpcwire.MDAppID) == nil {
		out.Set(grpcwire.MDAppID, c.opts.AppID)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	var last *endpoint
	for attempt := 0; ; attempt++ {
		ep := c.pick(eps, last)
		last = ep
		cc, err := ep.conn(c.dialOpts)
		if err != nil {
			return c.fail("failed to proxy request: %v", err)
		}
		ep.inflight.Add(1)
		cs, err := cc.NewStream(ctx, grpcwire.StreamDesc, ex.Stream.FullMethod(), grpc.ForceCodecV2(grpcwire.RawCodec))
		if err == nil {
			err = grpcwire.Pump(ss, cs, cancel)
			ep.inflight.Add(-1)
			return err
		}
		ep.inflight.Add(-1)
		// Nothing was sent yet: a refused connection may try another endpoint.
		st := status.Convert(err)
		if !notSent(st) {
			return err
		}
		ep.ejected.Store(time.Now().Add(c.opts.Eject).UnixNano())
		ep.dropIf(cc)
		if attempt >= c.opts.Retries || !healthyOther(eps, ep) {
			return err
		}
	}
}

// bridge forwards a proxied call's HTTP/2 frames to a peer sidecar's
// internal port (the gRPC API listener's frame mode), with the caller and
// callee ids set as for grpc-go's proxying. A connection that cannot be
// made tries another endpoint, as there.
func (c *Cluster) bridge(ctx context.Context, st *h2proxy.Stream) error {
	eps, err := c.endpoints(ctx)
	if err != nil {
		return c.fail("failed to proxy request: couldn't resolve address for %s: %v", c.opts.AppID, err)
	}
	in := st.Fields()
	fields := make([]hpack.HeaderField, 0, len(in)+3)
	hasAppID := false
	for _, f := range in {
		switch f.Name {
		case grpcwire.MDCallerID, grpcwire.MDCalleeID:
			continue
		case grpcwire.MDAppID:
			hasAppID = true
		case "grpc-timeout":
			f = h2proxy.UpstreamTimeout(ctx, f)
		}
		fields = append(fields, f)
	}
	fields = append(fields, hpack.HeaderField{Name: grpcwire.MDCallerID, Value: c.opts.SelfAppID},
		hpack.HeaderField{Name: grpcwire.MDCalleeID, Value: c.opts.AppID})
	if !hasAppID {
		fields = append(fields, hpack.HeaderField{Name: grpcwire.MDAppID, Value: c.opts.AppID})
	}
	var last *endpoint
	for attempt := 0; ; attempt++ {
		ep := c.pick(eps, last)
		last = ep
		for i := range fields {
			if fields[i].Name == ":authority" {
				fields[i].Value = ep.addr
			}
		}
		ep.inflight.Add(1)
		err := st.Bridge(ctx, ep.shared.framePool(c.opts.PeerKeepalive), fields)
		ep.inflight.Add(-1)
		if err == nil || st.Answered() || !notSent(status.Convert(err)) {
			return err
		}
		// Nothing was sent: a refused connection may try another endpoint.
		ep.ejected.Store(time.Now().Add(c.opts.Eject).UnixNano())
		if attempt >= c.opts.Retries || !healthyOther(eps, ep) {
			return err
		}
	}
}

var errEOF = io.EOF
