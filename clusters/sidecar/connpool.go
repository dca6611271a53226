package sidecar

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
)

// conns is the process's pool of connections to peer sidecars, one per
// address: the sidecar clusters of every app id served at an address share
// it, so N app ids behind one sidecar cost one HTTP/2 connection (and one
// peer-link connection pool), not N.
var conns = &connPool{m: map[string]*sharedConn{}}

type connPool struct {
	mu sync.Mutex
	m  map[string]*sharedConn
}

// sharedConn is the pool's entry for one address. cur is the connection in
// use; a failed one is swapped out for every holder at once.
type sharedConn struct {
	addr string
	refs int // guarded by connPool.mu
	mu   sync.Mutex
	cur  atomic.Pointer[grpc.ClientConn]
	// The peer link to the address (httplink.go): whether the peer
	// offered it, and its client, made on first use.
	linkOK atomic.Bool
	lc     atomic.Pointer[peerhttp.Client]
	// The HTTP/2 connection that carries gRPC proxying calls frame by
	// frame (the gRPC API listener's frame mode), made on first use.
	frames atomic.Pointer[h2proxy.Pool]
}

// acquire returns the entry for addr, counting one more holder. It dials
// nothing.
func (p *connPool) acquire(addr string) *sharedConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.m[addr]
	if !ok {
		s = &sharedConn{addr: addr}
		p.m[addr] = s
	}
	s.refs++
	return s
}

// release drops one holder; the last one closes the connection.
func (p *connPool) release(s *sharedConn) {
	p.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		delete(p.m, s.addr)
	}
	p.mu.Unlock()
	if last {
		if cc := s.cur.Swap(nil); cc != nil {
			_ = cc.Close()
		}
		if lc := s.lc.Swap(nil); lc != nil {
			lc.Close()
		}
		if fp := s.frames.Swap(nil); fp != nil {
			fp.Close()
		}
	}
}

// get returns the connection, creating it on first use.
func (s *sharedConn) get(opts []grpc.DialOption) (*grpc.ClientConn, error) {
	if cc := s.cur.Load(); cc != nil {
		return cc, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cc := s.cur.Load(); cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+s.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("sidecar: endpoint %s: %w", s.addr, err)
	}
	s.cur.Store(cc)
	return cc, nil
}

// framePool returns the address's pool for bridged calls, made on first use
// with keepalive (a peer that says it answers PINGs is PINGed when calls wait
// in silence).
func (s *sharedConn) framePool(keepalive time.Duration) *h2proxy.Pool {
	if p := s.frames.Load(); p != nil {
		return p
	}
	p := h2proxy.NewPool(s.addr, nil).WithKeepalive(keepalive)
	if !s.frames.CompareAndSwap(nil, p) {
		return s.frames.Load()
	}
	return p
}

// dropIf replaces cc, if it is still the connection in use, so that the next
// call dials afresh; cc is closed later, since calls in flight share it.
func (s *sharedConn) dropIf(cc *grpc.ClientConn) {
	if s.cur.CompareAndSwap(cc, nil) {
		time.AfterFunc(drainConn, func() { _ = cc.Close() })
	}
}
