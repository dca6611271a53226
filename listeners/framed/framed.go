// Package framed serves a gRPC listener's port with internal/h2proxy: the
// calls a listener takes for itself (gRPC proxying) become h2proxy streams
// whose frames a cluster bridges upstream, and every other call is handed,
// frames unchanged, to the listener's grpc-go server in the same process
// over a socket pair. The caller's IP travels to that server in PeerField.
package framed

import (
	"context"
	"errors"
	"net"
	"net/netip"
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

// PeerField carries the caller's IP to the in-process grpc-go server; a
// caller's own value is dropped.
const PeerField = "switchyard-peer-addr"

// Server is one listener's frame server.
type Server struct {
	log    *zap.Logger
	srv    *grpc.Server
	take   func(path, appID string) bool // the listener serves the call itself
	handle func(*h2proxy.Stream)
	inproc *listeners.ChanListener // the grpc-go server's side of the socket pairs
	loop   *h2proxy.Pool           // our side
	done   chan struct{}
	closed sync.Once

	mu      sync.Mutex
	lns     []net.Listener
	conns   map[*h2proxy.Conn]struct{}
	sorting map[net.Conn]struct{} // connections whose first call is awaited
	wg      sync.WaitGroup
}

// New starts serving srv in-process. take decides, from a call's :path and
// dapr-app-id, which calls handle gets (on a goroutine of its own); the
// rest go to srv.
func New(log *zap.Logger, srv *grpc.Server, take func(path, appID string) bool, handle func(*h2proxy.Stream)) *Server {
	s := &Server{log: log, srv: srv, take: take, handle: handle, done: make(chan struct{}),
		conns: make(map[*h2proxy.Conn]struct{}), sorting: make(map[net.Conn]struct{}),
		inproc: listeners.NewChanListener(&net.UnixAddr{Name: "switchyard-in-process", Net: "unix"})}
	s.loop = h2proxy.NewPool("switchyard-in-process", s.dialInProc)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(s.inproc); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("in-process gRPC server stopped", zap.Error(err))
		}
	}()
	return s
}

// Serve accepts HTTP/2 connections from ln until ln or the server closes.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	err := listeners.AcceptLoop(ln, s.done, s.serve)
	select {
	case <-s.done:
		return nil
	default:
		return err
	}
}

// dialInProc connects a socket pair to the grpc-go server.
func (s *Server) dialInProc(context.Context) (net.Conn, error) {
	ours, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	s.inproc.Push(theirs)
	return ours, nil
}

// serve sorts a new connection by its first call (sort.go) on a goroutine
// of its own.
func (s *Server) serve(nc net.Conn) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sort(nc)
	}()
}

// serveFramesLocked serves a connection with h2proxy (under mu).
func (s *Server) serveFramesLocked(nc net.Conn) {
	c := h2proxy.NewServerConn(context.Background(), nc, s.onStream)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := c.Serve(); err != nil {
			s.log.Debug("connection ended", zap.Error(err))
		}
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

func (s *Server) onStream(st *h2proxy.Stream) {
	st.DeleteField(PeerField)
	if s.take(st.FullMethod(), st.Header(grpcwire.MDAppID)) {
		s.handle(st)
		return
	}
	fields := st.Fields()
	if ip := addrIP(st.RemoteAddr()); ip.IsValid() {
		fields = append(fields[:len(fields):len(fields)], hpack.HeaderField{Name: PeerField, Value: ip.String()})
	}
	if err := st.Bridge(st.Context(), s.loop, fields); err != nil && !st.Answered() {
		st.Fail(codes.Unavailable, "in-process gRPC server: "+err.Error(), nil)
	}
}

// Close stops accepting, lets calls in flight finish until ctx ends, then
// closes the connection to the in-process server (the caller stops srv).
func (s *Server) Close(ctx context.Context) {
	s.closed.Do(func() {
		close(s.done)
		s.mu.Lock()
		for _, ln := range s.lns {
			_ = ln.Close()
		}
		conns := make([]*h2proxy.Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		for nc := range s.sorting {
			_ = nc.Close() // no call started on it yet
		}
		s.mu.Unlock()
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() { defer wg.Done(); c.Shutdown(ctx) }()
		}
		wg.Wait()
		s.loop.Close()
	})
}

func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Wait waits for the connections' goroutines and the in-process server
// (after the caller stopped srv).
func (s *Server) Wait() { s.wg.Wait() }

// Fail answers a call the chain refused, unless it was answered.
func Fail(st *h2proxy.Stream, err error) {
	if st.Answered() {
		return
	}
	if err == nil {
		err = filters.NewError(filters.ErrCodeDirectInvoke, 500, codes.Internal,
			"failed to proxy request: the route's cluster did not answer the call")
	}
	gs := grpcwire.Status(err, filters.KindInvoke)
	var details []byte
	if p := gs.Proto(); len(p.GetDetails()) > 0 {
		details, _ = proto.Marshal(p)
	}
	st.Fail(gs.Code(), gs.Message(), details)
}

// Exchange fills ex from a call's header fields as the grpc-go listeners
// fill it from metadata: the request headers, the caller's IP, POST, the
// stream.
func Exchange(ex *filters.Exchange, st *h2proxy.Stream) {
	for _, f := range st.Fields() {
		grpcwire.FieldToHeader(f.Name, f.Value, &ex.Req.Header)
	}
	ex.SetRemoteAddr(addrIP(st.RemoteAddr()))
	ex.Req.Header.SetMethod("POST")
	ex.Stream = st
}

func addrIP(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// CallerIP returns the caller's IP of a call served by grpc-go: the
// transport's peer, or for a call handed over in-process the IP in
// PeerField. PeerField is removed from md either way.
func CallerIP(ctx context.Context, md metadata.MD) netip.Addr {
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

// PeerIP is CallerIP for a handler that does not turn the call's metadata
// into headers: it reads PeerField without copying the metadata.
func PeerIP(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return netip.Addr{}
	}
	if _, unix := p.Addr.(*net.UnixAddr); unix {
		if v := metadata.ValueFromIncomingContext(ctx, PeerField); len(v) > 0 {
			ip, _ := netip.ParseAddr(v[0])
			return ip
		}
	}
	return grpcwire.PeerAddr(p)
}
