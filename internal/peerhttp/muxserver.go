package peerhttp

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// Handler answers one call of the multiplexed link: resp is empty, ctx ends
// when the caller cancels, the connection fails, or the server's base
// context ends. A malformed request (err != nil) is the handler's to answer
// too, with the error.
type Handler func(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, remote net.Addr, err error)

// Server serves the multiplexed link on connections whose preface was read.
type Server struct {
	handler Handler
	maxBody int
	base    context.Context

	mu      sync.Mutex
	conns   map[*serverConn]struct{}
	closing bool
	work    chan *serverCall // idle workers wait here
	idleN   atomic.Int32
	quit    chan struct{}
}

// maxWorkers is how many idle call goroutines are kept.
const maxWorkers = 64

// maxCallsPerConn bounds the calls in flight on one connection: beyond it
// the connection's reader waits (and TCP pushes back on the caller).
const maxCallsPerConn = 4096

// NewServer returns a server whose calls run under base.
func NewServer(h Handler, maxBody int, base context.Context) *Server {
	return &Server{handler: h, maxBody: maxBody, base: base, conns: map[*serverConn]struct{}{},
		work: make(chan *serverCall), quit: make(chan struct{})}
}

// serverConn is one connection a caller opened.
type serverConn struct {
	s *Server
	c net.Conn
	w *frameWriter

	mu     sync.Mutex
	calls  map[uint32]context.CancelFunc
	last   uint32 // the highest stream id taken
	goaway bool   // GOAWAY sent: later calls are not taken
	idle   chan struct{}
	slots  chan struct{}
}

// serverCall is one call handed to a worker.
type serverCall struct {
	sc     *serverConn
	id     uint32
	ctx    context.Context
	cancel context.CancelFunc
	req    fasthttp.Request
	resp   fasthttp.Response
	perr   error
	raw    []byte // the parts of a request that came in several frames
	head   []byte // the serialized response header
}

var serverCallPool = sync.Pool{New: func() any { return new(serverCall) }}

// ServeConn serves c (the preface already read) until it ends.
func (s *Server) ServeConn(c net.Conn) {
	sc := &serverConn{s: s, c: c, w: newFrameWriter(c), calls: map[uint32]context.CancelFunc{},
		slots: make(chan struct{}, maxCallsPerConn)}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		sc.w.send(0, FrameGoAway, binary.BigEndian.AppendUint32(nil, 0))
		_ = c.Close()
		return
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	_ = sc.serve(newFrameReader(c))
	_ = c.Close()
	sc.mu.Lock()
	for _, cancel := range sc.calls {
		cancel() // the caller is gone
	}
	sc.mu.Unlock()
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
}

func (sc *serverConn) serve(fr *frameReader) error {
	// Requests whose last part is still to come; nil: one not taken, whose
	// parts are skipped.
	partial := map[uint32]*serverCall{}
	limit := MaxFrame
	if sc.s.maxBody > 0 {
		limit = min(limit, sc.s.maxBody+1<<20)
	}
	for {
		n, id, typ, err := fr.next()
		if err != nil {
			return err
		}
		more := typ&FlagMore != 0
		switch typ &^ FlagMore {
		case FrameRequest:
			if _, open := partial[id]; open {
				return fmt.Errorf("%w: stream %d opened twice", errProtocol, id)
			}
			call, err := sc.open(id)
			if err != nil {
				return err
			}
			if call == nil || n > limit {
				if call != nil {
					call.perr = fasthttp.ErrBodyTooLarge
					call.raw = nil
				}
				if err := fr.skip(n); err != nil {
					return err
				}
			} else if err := fr.read(n); err != nil {
				return err
			}
			if more {
				if call != nil && call.perr == nil {
					call.raw = append(call.raw[:0], fr.payload...)
				}
				partial[id] = call
				fr.release()
				continue
			}
			if call != nil {
				sc.take(fr, call, fr.payload)
			}
		case FrameContinued:
			call, open := partial[id]
			if !open {
				return fmt.Errorf("%w: part of stream %d, which is not open", errProtocol, id)
			}
			if call == nil || call.perr != nil || len(call.raw)+n > limit {
				if call != nil && call.perr == nil {
					call.perr = fasthttp.ErrBodyTooLarge
					call.raw = call.raw[:0]
				}
				if err := fr.skip(n); err != nil {
					return err
				}
			} else {
				if err := fr.read(n); err != nil {
					return err
				}
				call.raw = append(call.raw, fr.payload...)
			}
			if more {
				continue
			}
			delete(partial, id)
			if call != nil {
				sc.take(fr, call, call.raw)
			}
		case FramePing:
			if err := fr.skip(n); err != nil {
				return err
			}
			sc.w.send(0, FramePong, nil)
		case FrameCancel:
			if err := fr.skip(n); err != nil {
				return err
			}
			sc.mu.Lock()
			cancel := sc.calls[id]
			sc.mu.Unlock()
			if cancel != nil {
				cancel()
			}
		default:
			return fmt.Errorf("%w: frame type %d from the caller", errProtocol, typ)
		}
	}
}

// open takes stream id's request when its first frame arrives: ids must
// grow, and after a GOAWAY no request is taken (nil: the caller sends it
// again elsewhere). A taken call counts as in flight from here, so that a
// graceful close waits for it.
func (sc *serverConn) open(id uint32) (*serverCall, error) {
	call := serverCallPool.Get().(*serverCall)
	call.sc, call.id = sc, id
	sc.slots <- struct{}{}
	call.ctx, call.cancel = context.WithCancel(sc.s.base)
	sc.mu.Lock()
	if id <= sc.last || sc.goaway {
		last := sc.last
		sc.mu.Unlock()
		<-sc.slots
		call.release()
		if id <= last {
			return nil, fmt.Errorf("%w: stream %d after %d", errProtocol, id, last)
		}
		return nil, nil
	}
	sc.last = id
	sc.calls[id] = call.cancel
	sc.mu.Unlock()
	return call, nil
}

// take parses the whole request msg of a call (unless it is known bad
// already) and hands the call to a worker.
func (sc *serverConn) take(fr *frameReader, call *serverCall, msg []byte) {
	if call.perr == nil {
		call.perr = fr.parse(msg, func(br *bufio.Reader) error {
			return call.req.ReadLimitBody(br, sc.s.maxBody)
		})
	}
	fr.release()
	if cap(call.raw) > maxKeptBuf {
		call.raw = nil
	}
	sc.s.run(call)
}

// run hands call to an idle worker, or to a new goroutine.
func (s *Server) run(call *serverCall) {
	select {
	case s.work <- call:
	default:
		go s.worker(call)
	}
}

// worker serves call and then waits for more, while fewer than maxWorkers
// wait.
func (s *Server) worker(call *serverCall) {
	for {
		call.serve()
		if s.idleN.Add(1) > maxWorkers {
			s.idleN.Add(-1)
			return
		}
		select {
		case call = <-s.work:
			s.idleN.Add(-1)
		case <-s.quit:
			return
		}
	}
}

// serve answers one call and writes the answer.
func (call *serverCall) serve() {
	sc := call.sc
	sc.s.handler(call.ctx, &call.req, &call.resp, sc.c.RemoteAddr(), call.perr)
	body := call.resp.Body()
	call.resp.Header.SetContentLength(len(body))
	call.head = call.resp.Header.AppendBytes(call.head[:0])
	end := firstPart(len(call.head) + len(body))
	_, first := sc.w.addPart(call.id, FrameResponse, call.head, body, 0, end, nil)
	sc.w.kick(first)
	sc.w.sendRest(call.id, call.head, body, end, nil)
	sc.mu.Lock()
	delete(sc.calls, call.id)
	done := sc.goaway && len(sc.calls) == 0
	idle := sc.idle
	sc.mu.Unlock()
	<-sc.slots
	if done && idle != nil {
		close(idle)
	}
	call.release()
}

// release returns call to the pool.
func (call *serverCall) release() {
	if call.cancel != nil {
		call.cancel()
	}
	if cap(call.head) > maxKeptBuf {
		call.head = nil
	}
	call.raw = call.raw[:0]
	call.req.Reset()
	call.resp.Reset()
	call.perr = nil
	call.ctx, call.cancel, call.sc = nil, nil, nil
	serverCallPool.Put(call)
}

// Shutdown says GOAWAY on every connection, waits until the calls they took
// are answered (or ctx ends) and closes them. Connections that arrive later
// get a GOAWAY at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.quit)
	}
	s.closing = true
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	// Every connection hears GOAWAY first, so that none goes on taking
	// calls while another drains.
	idles := make([]chan struct{}, len(conns))
	for i, sc := range conns {
		sc.mu.Lock()
		sc.goaway = true
		last := sc.last
		if sc.idle == nil {
			sc.idle = make(chan struct{})
			if len(sc.calls) == 0 {
				close(sc.idle)
			}
		}
		idles[i] = sc.idle
		sc.mu.Unlock()
		sc.w.send(0, FrameGoAway, binary.BigEndian.AppendUint32(nil, last))
	}
	for i, sc := range conns {
		select {
		case <-idles[i]:
		case <-ctx.Done():
		}
		sc.w.flush() // answers another goroutine queued and has yet to write
		_ = sc.c.Close()
	}
	return ctx.Err()
}
