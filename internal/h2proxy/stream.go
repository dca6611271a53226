package h2proxy

import (
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// stream is one side of a bridged call: the downstream stream on the
// accepted connection or the upstream stream on the dialed one. Frames that
// arrive on it are forwarded to its peer.
type stream struct {
	c  *Conn
	id uint32

	// send side, under c.wmu
	sendWin  int64
	q        []frame // frames waiting for window, in order
	sentHdr  bool    // HEADERS written or queued
	sentEnd  bool    // END_STREAM written
	resetOut bool    // RST_STREAM written or received: nothing more is sent

	mu       sync.Mutex // the link, and data that arrives before it
	peer     *stream
	early    []byte
	earlyN   int64
	earlyEnd bool
	resetIn  bool // RST_STREAM received or the connection failed

	recvEnd atomic.Bool  // END_STREAM received
	unacked atomic.Int64 // forwarded data not yet credited to the sender
	removed atomic.Bool
	ss      *Stream // the server stream (downstream side only)
}

// frame is a queued DATA or HEADERS frame; n is what it credits back to
// src once written.
type frame struct {
	data   []byte
	fields []hpack.HeaderField
	hdr    bool
	end    bool
	src    *stream
	n      int64
}

// onData forwards a DATA frame received on s (reader of s.c). Its n bytes
// count as held on s.c until forwarded or dropped.
func (s *stream) onData(data []byte, end bool, n int64) {
	if end {
		s.recvEnd.Store(true)
	}
	s.mu.Lock()
	p := s.peer
	if p == nil {
		over := s.earlyN+n > window
		kept := !s.resetIn && !over
		if kept {
			s.early = append(s.early, data...)
			s.earlyN += n
			s.earlyEnd = s.earlyEnd || end
		}
		s.mu.Unlock()
		if !kept {
			s.c.released(n, s.c)
		}
		if over {
			// More than the window this end granted: the caller ignores
			// flow control.
			s.c.resetStream(s.id, http2.ErrCodeFlowControl)
		}
		return
	}
	s.mu.Unlock()
	if p.sendData(data, end, s, n, s.c) {
		s.forwarded(n, s.c)
	}
	if end {
		s.maybeRemove()
	}
}

// onHeaders forwards response headers or trailers received on s.
func (s *stream) onHeaders(fields []hpack.HeaderField, end bool) {
	if end {
		s.recvEnd.Store(true)
	}
	s.mu.Lock()
	p := s.peer
	if p == nil && end {
		// Trailers that end the request before the call is bridged: the
		// end crosses with the early data (gRPC has no request trailers).
		s.earlyEnd = true
	}
	s.mu.Unlock()
	if p != nil {
		p.sendHeaders(fields, end, s.c)
	}
	if end {
		s.maybeRemove()
	}
}

// onReset handles RST_STREAM received on s: the peer is reset with the same
// code, unless the peer's answer is already complete.
func (s *stream) onReset(code http2.ErrCode) {
	s.remove()
	s.c.wmu.Lock()
	s.resetOut = true
	dropped := s.dropQueueLocked()
	s.c.wmu.Unlock()
	release(dropped, s.c)
	s.mu.Lock()
	s.resetIn = true
	p := s.peer
	early := s.dropEarlyLocked()
	s.mu.Unlock()
	s.c.released(early, s.c)
	if p != nil {
		if s.recvEnd.Load() && code == http2.ErrCodeNo {
			// The answer (or the request) ended before the reset: the
			// other side completes with what it got.
			p.finishAfterEnd(s.c)
		} else {
			p.reset(code, s.c)
		}
	}
	if s.ss != nil {
		s.ss.finish()
	}
}

// detach ends s's part in its call, once s left its connection's map: its
// queued frames are dropped (what they held goes back to their senders)
// and it takes no more data; stop also ends sending on s. It returns s's
// peer.
func (s *stream) detach(stop bool) *stream {
	s.removed.Store(true)
	s.c.wmu.Lock()
	s.resetOut = s.resetOut || stop
	dropped := s.dropQueueLocked()
	s.c.wmu.Unlock()
	release(dropped, nil)
	s.mu.Lock()
	s.resetIn = true
	p := s.peer
	// Early data is gone with a failed connection (nothing to credit);
	// an upstream stream has none.
	s.early, s.earlyN = nil, 0
	s.mu.Unlock()
	return p
}

// connGone ends s when its connection failed.
func (s *stream) connGone(err error) {
	p := s.detach(false)
	if s.ss != nil {
		s.ss.finish()
	}
	if p == nil {
		return
	}
	if p.ss != nil && !s.recvEnd.Load() {
		// The upstream connection failed under a call: the caller gets a
		// status, not a bare reset.
		p.ss.failUpstream(err)
		return
	}
	if !s.recvEnd.Load() {
		p.reset(http2.ErrCodeCancel, nil)
	}
}

// refused ends s, an upstream stream that its peer's GOAWAY says it never
// processed. Nothing of the call reached the app, so the caller's stream
// is reset with REFUSED_STREAM: gRPC clients send such a call again on
// their own (transparent retry), and the new attempt finds a connection
// that is not going away. The call's outcome is Unavailable.
func (s *stream) refused() {
	p := s.detach(true) // nothing more goes to a stream the peer ignores
	if p == nil {
		return
	}
	if p.ss != nil {
		p.ss.setStatus(codes.Unavailable, "h2proxy: the upstream went away before it processed the call (refused, the caller may retry)")
	}
	p.reset(http2.ErrCodeRefusedStream, nil)
}

// reset writes RST_STREAM on s and drops it. rd is the connection whose
// reader runs this (its writes are flushed later), nil to flush now.
func (s *stream) reset(code http2.ErrCode, rd *Conn) {
	c := s.c
	s.remove()
	c.wmu.Lock()
	var dropped []credit
	if !s.resetOut && !(s.sentEnd && s.recvEnd.Load()) {
		s.resetOut = true
		dropped = s.dropQueueLocked()
		c.writeErr(c.wf.WriteRSTStream(s.id, code))
	}
	c.wmu.Unlock()
	release(dropped, rd)
	s.flushBy(rd)
	if s.ss != nil {
		s.ss.finish()
	}
}

// finishAfterEnd handles the peer's reset after its END_STREAM: s stays
// until its queue drains; a server stream whose caller is still sending is
// reset with NO_ERROR once its answer is out (what gRPC servers do).
func (s *stream) finishAfterEnd(rd *Conn) {
	c := s.c
	c.wmu.Lock()
	done := s.sentEnd
	c.wmu.Unlock()
	if done && !s.recvEnd.Load() {
		s.reset(http2.ErrCodeNo, rd)
	}
}

func (s *stream) flushBy(rd *Conn) {
	if rd != nil {
		rd.markDirty(s.c)
		return
	}
	s.c.scheduleFlush()
}

// sendData sends data on s (a stream of another connection than the
// caller's). It reports whether the data was written, so that src may be
// credited now; queued data credits src when it is written.
func (s *stream) sendData(data []byte, end bool, src *stream, n int64, rd *Conn) bool {
	c := s.c
	c.wmu.Lock()
	if s.resetOut || c.werr != nil {
		c.wmu.Unlock()
		return true
	}
	if len(s.q) == 0 {
		data = s.writeDataLocked(data, end)
	}
	written := data == nil
	if !written {
		s.q = append(s.q, frame{data: append([]byte(nil), data...), end: end, src: src, n: n})
		if len(s.q) == 1 {
			c.blocked = append(c.blocked, s)
		}
	}
	c.wmu.Unlock()
	s.flushBy(rd)
	return written
}

// writeDataLocked writes as much of data as the windows (and room in the
// connection's buffer) allow and returns
// the rest (nil when all was written, END_STREAM included).
func (s *stream) writeDataLocked(data []byte, end bool) []byte {
	c := s.c
	if len(data) == 0 {
		if end {
			c.writeErr(c.wf.WriteData(s.id, true, nil))
			s.ended()
		}
		return nil
	}
	for len(data) > 0 {
		w := min(int64(len(data)), s.sendWin, c.sendWin, c.room())
		if w <= 0 {
			return data
		}
		last := int(w) == len(data)
		c.writeErr(c.wf.WriteData(s.id, end && last, data[:w]))
		s.sendWin -= w
		c.sendWin -= w
		data = data[w:]
	}
	if end {
		s.ended()
	}
	return nil
}

// sendHeaders sends HEADERS on s, after any queued data; nothing once
// END_STREAM was written or queued.
func (s *stream) sendHeaders(fields []hpack.HeaderField, end bool, rd *Conn) {
	c := s.c
	c.wmu.Lock()
	if s.resetOut || c.werr != nil || s.sentEnd || len(s.q) > 0 && s.q[len(s.q)-1].end {
		c.wmu.Unlock()
		return
	}
	s.sentHdr = true
	if s.ss != nil && end {
		s.ss.noteStatus(fields)
	}
	if len(s.q) == 0 {
		c.writeHeadersLocked(s.id, fields, end)
		if end {
			s.ended()
		}
	} else {
		// The reader reuses fields for the next block.
		s.q = append(s.q, frame{fields: slices.Clone(fields), hdr: true, end: end})
	}
	c.wmu.Unlock()
	s.flushBy(rd)
}

// drainLocked writes queued frames while the windows allow (under c.wmu).
func (s *stream) drainLocked(credits []credit) []credit {
	for len(s.q) > 0 {
		f := &s.q[0]
		if f.hdr {
			s.c.writeHeadersLocked(s.id, f.fields, f.end)
			if f.end {
				s.ended()
			}
		} else {
			rest := s.writeDataLocked(f.data, f.end)
			if rest != nil {
				f.data = rest
				return credits
			}
			if f.src != nil {
				credits = append(credits, credit{f.src, f.n})
			}
		}
		s.q[0] = frame{}
		s.q = s.q[1:]
	}
	s.q = nil
	return credits
}

// ended records that END_STREAM was written on s (under c.wmu). A server
// stream whose caller has not ended its half is reset with NO_ERROR, as
// gRPC servers do once the status is out.
func (s *stream) ended() {
	s.sentEnd = true
	if s.ss == nil {
		if s.recvEnd.Load() {
			s.remove()
		}
		return
	}
	if !s.recvEnd.Load() {
		s.resetOut = true
		s.c.writeErr(s.c.wf.WriteRSTStream(s.id, http2.ErrCodeNo))
	}
	s.remove()
	s.ss.finish()
}

// maybeRemove drops s from its connection once both halves ended.
func (s *stream) maybeRemove() {
	c := s.c
	c.wmu.Lock()
	done := s.sentEnd
	c.wmu.Unlock()
	if done {
		s.remove()
	}
}

func (s *stream) remove() {
	if s.removed.Swap(true) {
		return
	}
	c := s.c
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
	}
	drained := false
	if !c.server {
		c.active--
		c.touched++
		drained = c.goAway && c.active == 0
	}
	c.mu.Unlock()
	if drained {
		// The peer said GOAWAY and the last call on it ended: nothing
		// will use the connection again.
		go c.fail(errDrained)
	}
	if s.ss != nil && c.open.Add(-1) == 0 {
		c.mu.Lock()
		draining := c.goAway
		c.mu.Unlock()
		if draining {
			c.idleOnce.Do(func() { close(c.idle) })
		}
	}
}

// dropQueueLocked empties s's queue (nothing more will be sent on s) and
// returns what the dropped DATA frames held on their senders' connections
// (under s.c.wmu).
func (s *stream) dropQueueLocked() []credit {
	var out []credit
	for _, f := range s.q {
		if f.src != nil && f.n > 0 {
			out = append(out, credit{f.src, f.n})
		}
	}
	s.q = nil
	return out
}

// release gives back to their connections the held bytes of dropped frames.
func release(dropped []credit, rd *Conn) {
	for _, cr := range dropped {
		cr.s.c.released(cr.n, rd)
	}
}

// dropEarlyLocked forgets the data that arrived before s was bridged and
// returns what it held on s.c (under s.mu).
func (s *stream) dropEarlyLocked() int64 {
	n := s.earlyN
	s.early, s.earlyN = nil, 0
	return n
}

// forwarded accounts for n bytes received on s that left for its peer (or
// were dropped with it): they no longer count as held on s.c, and return
// to s's window.
func (s *stream) forwarded(n int64, rd *Conn) {
	s.c.released(n, rd)
	s.credit(n, rd)
}

// credit returns n forwarded bytes of s's window to its sender.
func (s *stream) credit(n int64, rd *Conn) {
	if n == 0 || s.recvEnd.Load() {
		return
	}
	v := s.unacked.Add(n)
	for {
		if v < creditAt {
			return
		}
		if s.unacked.CompareAndSwap(v, 0) {
			break
		}
		v = s.unacked.Load()
	}
	c := s.c
	c.wmu.Lock()
	if !s.resetOut {
		c.writeErr(c.wf.WriteWindowUpdate(s.id, uint32(v)))
	}
	c.wmu.Unlock()
	s.flushBy(rd)
}
