package grpc

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// Frame mode (grpc_frame_proxy, the default): the listener is an HTTP/2
// server of its own (internal/h2proxy). A call carrying dapr-app-id of our
// own app goes through the chain as a streaming Exchange whose Stream is
// the h2proxy.Stream; the gRPC app cluster bridges its frames to the app's
// server without decoding a message. Every other call (the Dapr API, calls
// for other app ids, calls without dapr-app-id) is bridged unchanged to the
// grpc-go server in-process over a socket pair, where it is served as in
// grpc-go mode.

// PeerField carries the caller's IP to the in-process grpc-go server; a
// caller's own value is dropped.
const PeerField = "switchyard-peer-addr"

const daprService = "/dapr.proto.runtime.v1.Dapr/"

type frames struct {
	l      *Listener
	appID  string
	inproc *listeners.ChanListener // the grpc-go server's side of the socket pairs
	loop   *h2proxy.Pool           // our side
	done   chan struct{}
	closed sync.Once

	mu    sync.Mutex
	conns map[*h2proxy.Conn]struct{}
	wg    sync.WaitGroup
}

func (l *Listener) startFrames(appID string) {
	f := &frames{l: l, appID: appID, done: make(chan struct{}), conns: make(map[*h2proxy.Conn]struct{}),
		inproc: listeners.NewChanListener(&net.UnixAddr{Name: "switchyard-grpc-api", Net: "unix"})}
	f.loop = h2proxy.NewPool("switchyard-grpc-api", f.dialInProc)
	l.frames = f
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := l.srv.Serve(f.inproc); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			l.log.Error("gRPC API server stopped", zap.Error(err))
		}
	}()
	for _, ln := range l.lns {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			err := listeners.AcceptLoop(ln, f.done, f.serve)
			select {
			case <-f.done:
			default:
				l.log.Error("gRPC API listener stopped", zap.Error(err))
			}
		}()
	}
}

// dialInProc connects a socket pair to the grpc-go server.
func (f *frames) dialInProc(context.Context) (net.Conn, error) {
	ours, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	f.inproc.Push(theirs)
	return ours, nil
}

func (f *frames) serve(nc net.Conn) {
	c := h2proxy.NewServerConn(context.Background(), nc, f.onStream)
	f.mu.Lock()
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := c.Serve(); err != nil {
			f.l.log.Debug("gRPC API connection ended", zap.Error(err))
		}
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}()
}

// close stops accepting, lets calls in flight finish until ctx ends, then
// stops the in-process server.
func (f *frames) close(ctx context.Context) {
	f.closed.Do(func() { f.shutdown(ctx) })
}

func (f *frames) shutdown(ctx context.Context) {
	close(f.done)
	for _, ln := range f.l.lns {
		_ = ln.Close()
	}
	f.mu.Lock()
	conns := make([]*h2proxy.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.Shutdown(ctx) }()
	}
	wg.Wait()
	f.wg.Wait()
	f.loop.Close()
}

func (f *frames) onStream(st *h2proxy.Stream) {
	method := st.FullMethod()
	if id := st.Header(grpcwire.MDAppID); id != "" && id == f.appID && !strings.HasPrefix(method, daprService) {
		f.l.proxyFrames(st, id, method)
		return
	}
	fields := make([]hpack.HeaderField, 0, len(st.Fields())+1)
	for _, fl := range st.Fields() {
		if fl.Name != PeerField {
			fields = append(fields, fl)
		}
	}
	if ip := addrIP(st.RemoteAddr()); ip.IsValid() {
		fields = append(fields, hpack.HeaderField{Name: PeerField, Value: ip.String()})
	}
	if err := st.Bridge(st.Context(), f.loop, fields); err != nil && !st.Answered() {
		st.Fail(codes.Unavailable, "gRPC API: "+err.Error(), nil)
	}
}

// proxyFrames runs a proxied call of our own app through the chain; the
// app cluster bridges its frames.
func (l *Listener) proxyFrames(st *h2proxy.Stream, id, method string) {
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolGRPC
	ex.Listener = l.name
	for _, f := range st.Fields() {
		if f.Name != PeerField {
			grpcwire.FieldToHeader(f.Name, f.Value, &ex.Req.Header)
		}
	}
	ex.SetRemoteAddr(addrIP(st.RemoteAddr()))
	ex.Req.Header.SetMethod("POST")
	ex.Stream = st
	ex.SetInvoke([]byte(id), []byte(grpcwire.RouteMethod(method)))
	err := l.chain.Load().Handle(st.Context(), ex)
	if st.Answered() {
		return
	}
	if err == nil {
		err = filters.NewError(filters.ErrCodeDirectInvoke, 500, codes.Internal,
			"failed to proxy request: the route's cluster did not answer the call")
	}
	s := grpcwire.Status(err, filters.KindInvoke)
	var details []byte
	if p := s.Proto(); len(p.GetDetails()) > 0 {
		details, _ = proto.Marshal(p)
	}
	st.Fail(s.Code(), s.Message(), details)
}

func addrIP(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// callerIP returns the caller's IP of a call served by grpc-go: the
// transport's peer, or for a call bridged in-process the IP the frame
// listener passed in PeerField. PeerField is removed from md either way.
func callerIP(ctx context.Context, md metadata.MD) netip.Addr {
	var fwd []string
	if md != nil {
		fwd = md[PeerField]
		delete(md, PeerField)
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return netip.Addr{}
	}
	if _, unix := p.Addr.(*net.UnixAddr); unix && len(fwd) > 0 {
		ip, _ := netip.ParseAddr(fwd[0])
		return ip
	}
	return grpcwire.PeerAddr(p)
}
