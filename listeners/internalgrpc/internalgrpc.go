// Package internalgrpc is the internal listener (kind "internal"): the
// sidecar-to-sidecar API daprd's peers call, dapr.proto.internals.v1
// ServiceInvocation (CallLocal and CallLocalStream), plus gRPC proxying
// streams forwarded by a peer sidecar. Every call becomes an invocation of
// our own app id and runs the listener's chain, which ends in the router and
// the local app cluster.
//
// The folder is not named "internal" because Go would then refuse to let
// cmd/standard import it.
package internalgrpc

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	internalv1pb "github.com/dapr/dapr/pkg/proto/internals/v1"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
	"github.com/switchyard-proxy/switchyard/listeners"
	"github.com/switchyard-proxy/switchyard/listeners/framed"
)

func init() { listeners.Register(factory{}) }

type factory struct{}

var _ listeners.Factory = factory{}

func (factory) Kind() string { return config.ListenerInternal }

func (factory) Start(spec config.Listener, chain *listeners.ChainRef, rt *listeners.Runtime) (listeners.Listener, error) {
	return Start(spec, chain, rt)
}

// Listener is a running internal gRPC listener.
type Listener struct {
	internalv1pb.UnimplementedServiceInvocationServer

	name  string
	appID []byte
	chain *listeners.ChainRef
	log   *zap.Logger
	srv   *grpc.Server
	lns   []net.Listener
	wg    sync.WaitGroup
	// The HTTP/1.1 link to switchyard peers (nil when turned off), and how
	// many invocations came over it. The link's calls run under linkCtx
	// (with the caller's deadline), canceled by linkStop only when Close
	// gives up waiting, as srv.Stop cancels gRPC calls: fasthttp's own
	// request context is canceled as soon as a shutdown begins.
	link       *fasthttp.Server
	link2      *peerhttp.Server // the multiplexed form (version 2)
	linkServed atomic.Uint64
	linkCtx    context.Context
	linkStop   context.CancelFunc
	// frames serves the gRPC connections when grpc_frame_proxy is on
	// (frames.go); nil: grpc-go serves them.
	frames *framed.Server
}

var (
	_ listeners.Listener                   = (*Listener)(nil)
	_ internalv1pb.ServiceInvocationServer = (*Listener)(nil)
)

// linkOffer offers every form of the link: callers of this version take the
// multiplexed one with PINGs, earlier ones the form they know.
var linkOffer = metadata.Pairs(peerhttp.MDOffer, peerhttp.Version, peerhttp.MDOffer, peerhttp.MuxVersionV2, peerhttp.MDOffer, peerhttp.MuxVersion)

// chunkSize is the largest payload chunk CallLocalStream answers with.
const chunkSize = 1 << 20

// Start binds the listener's addresses (port 0: a free port) and serves.
func Start(spec config.Listener, chain *listeners.ChainRef, rt *listeners.Runtime) (*Listener, error) {
	cfg := rt.Snapshot().Config
	log := rt.Logger.With(zap.String("scope", "listener.internal"), zap.String("listener", spec.Name))
	maxMsg := cfg.DaprHTTPMaxRequestSize
	if maxMsg <= 0 {
		maxMsg = 4
	}
	l := &Listener{name: spec.Name, appID: []byte(cfg.AppID), chain: chain, log: log}
	l.srv = grpc.NewServer(
		grpc.UnknownServiceHandler(l.proxy),
		grpc.MaxRecvMsgSize(maxMsg<<20+1<<16),
		grpc.MaxSendMsgSize(maxMsg<<20+1<<16),
	)
	internalv1pb.RegisterServiceInvocationServer(l.srv, l)
	lns, err := listeners.Listen(log, spec.Name, spec.Addresses)
	if err != nil {
		return nil, err
	}
	l.lns = lns
	if cfg.GRPCFrameProxyOn() {
		l.frames = framed.New(log, l.srv, takeProxied, l.proxyFrames)
	}
	if cfg.InternalHTTPOn() {
		l.link = l.newLinkServer(maxMsg<<20, log)
		l.linkCtx, l.linkStop = context.WithCancel(context.Background())
		l.link2 = peerhttp.NewServer(l.serveMux, maxMsg<<20, l.linkCtx)
	}
	for _, ln := range lns {
		grpcLn := ln
		if l.link != nil {
			m := newMux(ln, l.link2, log)
			grpcLn = m.grpc
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				if err := l.link.Serve(m.http); err != nil && !errors.Is(err, net.ErrClosed) {
					log.Error("internal HTTP/1.1 link stopped", zap.Error(err))
				}
			}()
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if l.frames != nil {
				if err := l.frames.Serve(grpcLn); err != nil && !errors.Is(err, net.ErrClosed) {
					log.Error("internal gRPC listener stopped", zap.Error(err))
				}
				return
			}
			if err := l.srv.Serve(grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
				log.Error("internal gRPC listener stopped", zap.Error(err))
			}
		}()
	}
	for _, ln := range lns {
		port := 0
		if ta, ok := ln.Addr().(*net.TCPAddr); ok {
			port = ta.Port
		}
		log.Info("internal gRPC server listening", zap.String("address", ln.Addr().String()), zap.Int("port", port))
	}
	return l, nil
}

// Addrs returns the bound addresses.
func (l *Listener) Addrs() []net.Addr { return listeners.AddrsOf(l.lns) }

// Close stops accepting and waits for in-flight calls until ctx ends.
func (l *Listener) Close(ctx context.Context) error {
	if l.frames != nil {
		l.frames.Close(ctx)
	}
	done := make(chan struct{})
	go func() {
		l.srv.GracefulStop()
		close(done)
	}()
	if l.link != nil {
		_ = l.link.ShutdownWithContext(ctx)
		_ = l.link2.Shutdown(ctx)
		l.linkStop() // only calls still running after ctx ended
	}
	select {
	case <-done:
	case <-ctx.Done():
		l.srv.Stop()
		<-done
	}
	if l.frames != nil {
		l.frames.Wait()
	}
	l.wg.Wait()
	return nil
}

// CallLocal invokes our app with a unary internal request.
func (l *Listener) CallLocal(ctx context.Context, req *internalv1pb.InternalInvokeRequest) (*internalv1pb.InternalInvokeResponse, error) {
	if req.GetMessage() == nil {
		return nil, status.Error(codes.InvalidArgument, "internal: CallLocal: request has no message")
	}
	if l.link != nil {
		// Offer the HTTP/1.1 link; daprd peers ignore the header.
		_ = grpc.SetHeader(ctx, linkOffer)
	}
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	l.decode(ctx, ex, req)
	if err := l.chain.Load().Handle(ctx, ex); err != nil {
		return nil, grpcwire.Status(err, filters.KindInvoke).Err()
	}
	resp := encode(ex)
	resp.Message.Data = &anypb.Any{Value: append([]byte(nil), ex.Resp.Body()...)}
	return resp, nil
}

// CallLocalStream invokes our app with a request streamed in chunks and
// answers in chunks.
func (l *Listener) CallLocalStream(stream internalv1pb.ServiceInvocation_CallLocalStreamServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "internal: CallLocalStream: the stream has no request")
	}
	if err != nil {
		return err
	}
	req := first.GetRequest()
	if req.GetMessage() == nil {
		return status.Error(codes.InvalidArgument, "internal: CallLocalStream: the first message has no request")
	}
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	l.decode(ctx, ex, req)
	// The body is the request's data followed by every payload chunk.
	// decode set the data as a raw body, which AppendBody would drop: copy it.
	if b := ex.Req.Body(); len(b) > 0 {
		ex.Req.SetBody(b)
	}
	if p := first.GetPayload(); p != nil {
		ex.Req.AppendBody(p.GetData())
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if m.GetPayload() == nil {
			return status.Error(codes.InvalidArgument, "internal: CallLocalStream: a message after the first has no payload")
		}
		ex.Req.AppendBody(m.GetPayload().GetData())
	}
	if err := l.chain.Load().Handle(ctx, ex); err != nil {
		return grpcwire.Status(err, filters.KindInvoke).Err()
	}
	resp := encode(ex)
	body := ex.Resp.Body()
	n := min(len(body), chunkSize)
	if err := stream.Send(&internalv1pb.InternalInvokeResponseStream{Response: resp,
		Payload: &commonv1pb.StreamPayload{Data: body[:n], Seq: 0}}); err != nil {
		return err
	}
	for seq := uint64(1); n < len(body); seq++ {
		m := min(len(body)-n, chunkSize)
		if err := stream.Send(&internalv1pb.InternalInvokeResponseStream{
			Payload: &commonv1pb.StreamPayload{Data: body[n : n+m], Seq: seq}}); err != nil {
			return err
		}
		n += m
	}
	return nil
}

// decode fills ex from an internal request: verb, query, content type,
// headers from metadata, body, caller, and the route /invoke/<self>/method/<m>.
func (l *Listener) decode(ctx context.Context, ex *filters.Exchange, req *internalv1pb.InternalInvokeRequest) {
	msg := req.GetMessage()
	ex.Protocol = filters.ProtocolInternal
	ex.Listener = l.name
	r := ex.Req
	grpcwire.MetaToRequestHeaders(req.GetMetadata(), &r.Header)
	r.Header.SetMethod(grpcwire.Verb(msg.GetHttpExtension().GetVerb()))
	if q := msg.GetHttpExtension().GetQuerystring(); q != "" {
		r.URI().SetQueryString(q)
	}
	if ct := msg.GetContentType(); ct != "" {
		r.Header.SetContentType(ct)
	}
	if d := msg.GetData(); d != nil && len(d.GetValue()) > 0 {
		r.SetBodyRaw(d.GetValue())
	}
	if v := req.GetMetadata()[grpcwire.MDCallerID]; v != nil && len(v.Values) > 0 {
		ex.CallerAppID = []byte(v.Values[0])
	}
	if v := req.GetMetadata()[grpcwire.MDCallerNS]; v != nil && len(v.Values) > 0 {
		ex.CallerNamespace = []byte(v.Values[0])
	}
	ex.SetRemoteAddr(framed.PeerIP(ctx))
	ex.SetInvoke(l.appID, []byte(msg.GetMethod()))
}

// encode builds the internal response from ex.Resp, without its data.
func encode(ex *filters.Exchange) *internalv1pb.InternalInvokeResponse {
	resp := &internalv1pb.InternalInvokeResponse{
		Status:  &internalv1pb.Status{Code: int32(ex.Resp.StatusCode())},
		Headers: make(grpcwire.MetaMap, 4),
		Message: &commonv1pb.InvokeResponse{ContentType: string(ex.Resp.Header.ContentType())},
	}
	grpcwire.ResponseHeadersToMeta(&ex.Resp.Header, resp.Headers)
	if md, ok := ex.Value(grpcwire.TrailerKey).(metadata.MD); ok && len(md) > 0 {
		resp.Trailers = make(grpcwire.MetaMap, len(md))
		grpcwire.MDToMeta(md, resp.Trailers)
	}
	return resp
}

// proxy serves gRPC proxying streams a peer sidecar forwards: any method
// that is not ServiceInvocation's goes to our app's own gRPC server.
func (l *Listener) proxy(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "internal: proxy: no method in the stream")
	}
	ctx := ss.Context()
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolInternal
	ex.Listener = l.name
	md, _ := metadata.FromIncomingContext(ctx)
	ex.SetRemoteAddr(framed.CallerIP(ctx, md))
	grpcwire.IncomingToHeaders(md, &ex.Req.Header)
	ex.Req.Header.SetMethod("POST")
	if v := md.Get(grpcwire.MDCallerID); len(v) > 0 {
		ex.CallerAppID = []byte(v[0])
	}
	ex.Stream = &grpcwire.ServerStream{ServerStream: ss, Method: method, MD: md}
	ex.SetInvoke(l.appID, []byte(grpcwire.RouteMethod(method)))
	if err := l.chain.Load().Handle(ctx, ex); err != nil {
		return grpcwire.Status(err, filters.KindInvoke).Err()
	}
	return nil
}
