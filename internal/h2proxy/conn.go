// Package h2proxy forwards gRPC calls frame by frame between HTTP/2
// connections: a stream accepted on a downstream connection is bridged to a
// stream opened on an upstream connection, and DATA, HEADERS (response
// headers and trailers) and RST_STREAM frames cross as they arrive, with
// flow control on each connection of its own. No message is decoded and no
// goroutine runs per stream besides the one that decides where the stream
// goes; each connection has one reader goroutine, and writes are buffered
// and flushed when the reader that caused them has no whole frame left to
// read, so a burst of calls costs one write per burst. Those writes never
// block a reader: what a peer's socket does not take at once is written by
// the connection's own writer goroutine, so a caller that stops reading
// holds up its own calls only.
//
// The gRPC proxying listener uses it for calls carrying dapr-app-id: the
// chain decides the route and the app cluster bridges the stream to the
// app's own gRPC server, which is what grpc-go's stream-by-stream proxy did
// with a message-level copy and two transports' bookkeeping per call.
package h2proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/internal/keepalive"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

const (
	// window is the flow-control window this end grants to each stream and
	// to each connection. Callers and apps are local, so 1 MiB covers the
	// round trip.
	window = 1 << 20
	// creditAt is how much received data is credited back at once.
	creditAt = window / 4
	// holdLimit is how much data received on one connection may wait here
	// for its calls' upstreams before the connection's window stops being
	// credited on receipt (Envoy's per-connection buffer limit is 1 MiB
	// too): what one connection can make the proxy buffer is bounded by it
	// plus one window, however many calls it opens.
	holdLimit = window
	// defaultWindow is HTTP/2's initial window until the peer's SETTINGS.
	defaultWindow = 65535
	// maxFrame is the largest DATA frame this end sends (HTTP/2's default
	// and minimum SETTINGS_MAX_FRAME_SIZE, so every peer accepts it).
	maxFrame = 16384
	// maxHeaderList bounds a decoded header block.
	maxHeaderList = 1 << 20
	bufSize       = 32 << 10
)

// ErrClosed is returned for a stream whose connection closed.
var ErrClosed = errors.New("h2proxy: connection closed")

// Conn is one HTTP/2 connection, accepted (server) or dialed (client).
type Conn struct {
	nc     net.Conn
	server bool
	br     *bufio.Reader
	rf     *http2.Framer // read side: the reader goroutine only

	wmu         sync.Mutex
	out         []byte // frames written and not yet sent (under wmu)
	spare       []byte // the writer goroutine's other buffer
	backlog     bool   // the writer goroutine owns the socket: out waits for it
	raw         syscall.RawConn
	rawWrite    func(fd uintptr) bool // c.rawWriteFD
	wp          []byte                // tryWrite's state for rawWrite
	wn          int
	wres        error
	wf          *http2.Framer // write side, into out, under wmu
	henc        *hpack.Encoder
	hbuf        bytes.Buffer
	ecache      encCache
	sendWin     int64 // the peer's connection window for our DATA
	peerInitWin int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	blocked     []*stream
	werr        error
	wdlRefresh  time.Time // when the write deadline is next moved on
	nextID      uint32    // client: the next stream id to open

	// Connection-level receive accounting (under cmu): owed is data
	// received and not yet credited back to the peer, held what of it is
	// still buffered here (early data of calls not yet bridged, frames
	// queued for an upstream's window). Credit goes back on receipt while
	// held stays within holdLimit, and waits for forwarding past it;
	// creditDue asks the next flush to write it.
	cmu       sync.Mutex
	owed      int64
	held      int64
	creditDue atomic.Bool

	mu       sync.Mutex
	streams  map[uint32]*stream
	lastPeer uint32 // server: the highest stream id the peer opened
	// client: streams open, and how many the peer allows at once
	active         uint32
	peerMaxStreams uint32
	// client: streams opened or ended, and that count at the pool's last
	// idle check
	touched     uint64
	touchedSeen uint64
	settled     chan struct{} // closed at the peer's first SETTINGS
	settledOnce sync.Once
	goAway      bool // no new streams
	closed      bool
	closeErr    error
	done        chan struct{}

	dirty []*Conn // reader: connections written to and not yet flushed

	// keepalive (client): frames counts the batches of frames read;
	// answersPings is set when the peer's SETTINGS carry
	// settingAnswersPings; alive is the pool's keepalive check's (its
	// goroutine only).
	frames       atomic.Uint64
	answersPings atomic.Bool
	alive        keepalive.Check

	// header block being read (reader only): decoded into a slice reused
	// from one block to the next
	hdec     *hpack.Decoder
	hfields  []hpack.HeaderField
	hstream  uint32 // the stream whose block is being read
	hend     bool   // its HEADERS frame had END_STREAM
	hremain  int    // what the header list may still take
	hinvalid bool
	hregular bool
	hcache   bool     // the block is one frame that keeps the table: dcache may keep it
	dcache   decCache // header blocks decoded before (reader only)
	// flushReq wakes the flusher, which flushes what goroutines other than
	// a reader wrote (calls being opened, answers of the chain): the calls
	// that start together leave in one write.
	flushReq chan struct{}
	// backlogReq wakes the writer goroutine (the flusher) when the peer's
	// socket did not take all of out.
	backlogReq chan struct{}

	// server side
	onStream func(*Stream)
	ctx      context.Context
	idle     chan struct{} // closed when draining and the last stream ends
	idleOnce sync.Once
	open     atomic.Int32
}

func newConn(nc net.Conn, server bool) *Conn {
	c := &Conn{
		nc:     nc,
		server: server,
		br:     bufio.NewReaderSize(nc, bufSize),

		sendWin:     defaultWindow,
		peerInitWin: defaultWindow,
		streams:     make(map[uint32]*stream),
		nextID:      1,
		done:        make(chan struct{}),
		idle:        make(chan struct{}),
		flushReq:    make(chan struct{}, 1),
		backlogReq:  make(chan struct{}, 1),
	}
	c.peerMaxStreams = math.MaxUint32 // until the peer's SETTINGS say otherwise
	c.settled = make(chan struct{})
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
			c.rawWrite = c.rawWriteFD
		}
	}
	c.rf = http2.NewFramer(nil, c.br)
	c.rf.SetReuseFrames()
	c.rf.SetMaxReadFrameSize(maxFrame) // what SETTINGS leaves at the default
	c.hdec = hpack.NewDecoder(4096, c.emit)
	c.hdec.SetMaxStringLength(maxHeaderList)
	c.wf = http2.NewFramer(outWriter{c}, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// maxStreams is how many calls a caller may have open at once on one
// connection (SETTINGS_MAX_CONCURRENT_STREAMS). Each may hold up to a
// stream window of data before it is bridged, so the limit bounds what a
// connection can make the proxy buffer. A call over it is refused
// (REFUSED_STREAM: never seen, so clients may send it again).
var maxStreams uint32 = 1000

// settingAnswersPings (value 1), in a server's SETTINGS, says that it
// answers PINGs at any rate: a client pool with a keepalive may PING it
// while calls wait in silence. A grpc-go server sends no such setting (it
// closes a connection pinged too often for its enforcement policy), and
// clients ignore it from our servers, as RFC 9113 asks of unknown ones.
const settingAnswersPings http2.SettingID = 0xf0a1

// settings writes this end's SETTINGS and opens the connection window.
func (c *Conn) settings() error {
	s := []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: window}}
	if c.server {
		s = append(s, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams},
			http2.Setting{ID: settingAnswersPings, Val: 1})
	} else {
		s = append(s, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	if err := c.wf.WriteSettings(s...); err != nil {
		return err
	}
	return c.wf.WriteWindowUpdate(0, window-defaultWindow)
}

// usable reports whether new streams may be opened.
func (c *Conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goAway
}

// Close closes the connection and ends its streams.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	return nil
}

// fail closes the connection once, resetting the peers of its streams.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeErr = err
	ss := make([]*stream, 0, len(c.streams))
	for _, s := range c.streams {
		ss = append(ss, s)
	}
	clear(c.streams)
	c.mu.Unlock()
	_ = c.nc.Close()
	close(c.done)
	for _, s := range ss {
		s.connGone(err)
	}
}

// scheduleFlush has the flusher flush c soon.
func (c *Conn) scheduleFlush() {
	select {
	case c.flushReq <- struct{}{}:
	default:
	}
}

// flusher flushes on request, and writes what the peer's socket did not
// take at once, until the connection closes.
func (c *Conn) flusher() {
	for {
		select {
		case <-c.flushReq:
			// Yield once so that calls being opened on other goroutines
			// join this write (what grpc-go's writer does too).
			runtime.Gosched()
			c.wmu.Lock()
			c.flushLocked()
			c.wmu.Unlock()
		case <-c.backlogReq:
			c.writeBacklog()
		case <-c.done:
			return
		}
	}
}

// writeBacklog writes out, blocking, until the peer has taken all of it,
// then sends what waited for room meanwhile. The other goroutines go on
// adding frames to out, and DATA frames wait in their streams' queues once
// out holds outLimit. A peer that takes nothing for writeStall has its
// connection closed.
func (c *Conn) writeBacklog() {
	var credits []credit
	c.wmu.Lock()
	for c.backlog && c.werr == nil {
		buf := c.out
		c.out = c.spare[:0]
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeStall))
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		if cap(buf) <= outLimit*2 {
			c.spare = buf[:0]
		} else {
			c.spare = nil
		}
		if err != nil {
			c.writeErr(err)
			break
		}
		if len(c.out) == 0 {
			c.backlog = false
			_ = c.nc.SetWriteDeadline(time.Time{})
		}
		credits = c.drainLocked(credits)
	}
	c.flushLocked()
	c.wmu.Unlock()
	for _, cr := range credits {
		cr.s.forwarded(cr.n, nil)
	}
}

// flushDirty flushes the connections this reader wrote to.
func (c *Conn) flushDirty() {
	for i, d := range c.dirty {
		d.wmu.Lock()
		d.flushLocked()
		d.wmu.Unlock()
		c.dirty[i] = nil
	}
	c.dirty = c.dirty[:0]
}

// markDirty records that the reader of c wrote to d without flushing.
func (c *Conn) markDirty(d *Conn) {
	for _, x := range c.dirty {
		if x == d {
			return
		}
	}
	c.dirty = append(c.dirty, d)
}

// flushLocked sends out (under wmu): what the peer's socket takes at once,
// the rest by the writer goroutine.
func (c *Conn) flushLocked() {
	if c.creditDue.Load() {
		c.writeCreditLocked()
	}
	if c.werr != nil || c.backlog || len(c.out) == 0 {
		return
	}
	n, err := c.tryWrite(c.out)
	if err != nil {
		c.writeErr(err)
		return
	}
	if n == len(c.out) {
		if cap(c.out) > outLimit*2 {
			c.out = nil
		} else {
			c.out = c.out[:0]
		}
		return
	}
	c.out = c.out[:copy(c.out, c.out[n:])]
	c.backlog = true
	backlogs.Add(1)
	select {
	case c.backlogReq <- struct{}{}:
	default:
	}
}

// tryWrite writes what the socket takes of p without waiting (under wmu).
// A connection that gives no raw access is written with a deadline.
func (c *Conn) tryWrite(p []byte) (int, error) {
	if c.raw == nil {
		return stallWriter{c}.Write(p)
	}
	c.wp, c.wn, c.wres = p, 0, nil
	err := c.raw.Write(c.rawWrite)
	n, werr := c.wn, c.wres
	c.wp, c.wres = nil, nil
	if werr == nil {
		werr = err
	}
	return n, werr
}

// rawWriteFD is tryWrite's callback on the socket: it writes c.wp until the
// socket takes no more (under wmu, allocated once as c.rawWrite).
func (c *Conn) rawWriteFD(fd uintptr) bool {
	c.wn, c.wres = rawio.WriteSome(fd, c.wp)
	return true
}

// backlogs counts the times a connection's writes went to its writer
// goroutine.
var backlogs atomic.Int64

// outLimit is how much may wait in a connection's buffer for a peer that
// reads slowly before DATA for it waits in its streams' queues (and is
// credited to its senders only as it leaves).
const outLimit = 256 << 10

// room is how much DATA may go into out now (under wmu).
func (c *Conn) room() int64 {
	if !c.backlog {
		return maxFrame
	}
	return int64(outLimit - len(c.out))
}

// outWriter is the framer's writer: frames go into out (under wmu).
type outWriter struct{ c *Conn }

func (w outWriter) Write(p []byte) (int, error) {
	w.c.out = append(w.c.out, p...)
	return len(p), nil
}

// received accounts for n bytes of DATA read on c (reader only); hold says
// they stay buffered here until released.
func (c *Conn) received(n int64, hold bool) {
	c.cmu.Lock()
	c.owed += n
	if hold {
		c.held += n
	}
	due := c.owed >= creditAt && c.held <= holdLimit
	c.cmu.Unlock()
	if due {
		c.creditDue.Store(true)
		c.markDirty(c)
	}
}

// released accounts for n held bytes that were forwarded or dropped. rd is
// the connection whose reader runs this (it flushes later), nil to have
// the flusher write the credit.
func (c *Conn) released(n int64, rd *Conn) {
	if n == 0 {
		return
	}
	c.cmu.Lock()
	c.held -= n
	due := c.owed >= creditAt && c.held <= holdLimit
	c.cmu.Unlock()
	if !due {
		return
	}
	c.creditDue.Store(true)
	if rd != nil {
		rd.markDirty(c)
	} else {
		c.scheduleFlush()
	}
}

// writeCreditLocked credits the connection window with what is owed, if
// what is held allows (under wmu).
func (c *Conn) writeCreditLocked() {
	c.creditDue.Store(false)
	c.cmu.Lock()
	v := c.owed
	ok := v > 0 && c.held <= holdLimit
	if ok {
		c.owed = 0
	}
	c.cmu.Unlock()
	if ok {
		c.writeErr(c.wf.WriteWindowUpdate(0, uint32(v)))
	}
}

// writeStall is how long a write to a connection may wait for the peer to
// read before the connection is closed. A peer that reads, as every gRPC
// implementation does whatever its application does, never comes near it.
const writeStall = 5 * time.Second

// stallWriter writes to a connection that gives no raw access to its
// socket, blocking: every write has a deadline at least writeStall/2 away
// (under wmu).
type stallWriter struct{ c *Conn }

func (w stallWriter) Write(p []byte) (int, error) {
	c := w.c
	if now := time.Now(); now.After(c.wdlRefresh) {
		_ = c.nc.SetWriteDeadline(now.Add(writeStall))
		c.wdlRefresh = now.Add(writeStall / 2)
	}
	return c.nc.Write(p)
}

// writeErr records a write error (under wmu).
func (c *Conn) writeErr(err error) {
	if err != nil && c.werr == nil {
		c.werr = err
		go c.fail(fmt.Errorf("h2proxy: write: %w", err))
	}
}

// writeHeadersLocked encodes fields and writes them as HEADERS and
// CONTINUATION frames.
func (c *Conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	c.encodeLocked(fields)
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), maxFrame)
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = c.wf.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag,
				EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.wf.WriteContinuation(id, len(block) == 0, frag)
		}
		c.writeErr(err)
	}
}

// readLoop reads frames until the connection fails.
func (c *Conn) readLoop() {
	go c.flusher()
	err := c.readFrames()
	c.flushDirty()
	c.fail(err)
}

func (c *Conn) readFrames() error {
	for {
		if !c.frameBuffered() {
			c.flushDirty()
			c.frames.Add(1) // a batch of frames was read (the keepalive's sign of life)
		}
		f, err := c.rf.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.resetStream(se.StreamID, se.Code)
				continue
			}
			c.goAwayOn(err)
			if errors.Is(err, io.EOF) {
				return ErrClosed
			}
			return err
		}
		if err := c.handle(f); err != nil {
			c.goAwayOn(err)
			return err
		}
	}
}

// goAwayOn tells the peer why the connection ends when err is a
// connection error.
func (c *Conn) goAwayOn(err error) {
	var ce http2.ConnectionError
	if !errors.As(err, &ce) {
		return
	}
	c.mu.Lock()
	last := c.lastPeer
	c.mu.Unlock()
	c.wmu.Lock()
	_ = c.wf.WriteGoAway(last, http2.ErrCode(ce), nil)
	c.flushLocked()
	c.wmu.Unlock()
}

// frameBuffered reports whether a whole frame is already buffered, so that
// the next read does not wait for the socket.
func (c *Conn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := c.br.Peek(9)
	return n >= 9+int(h[0])<<16|int(h[1])<<8|int(h[2])
}

func (c *Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.HeadersFrame:
		c.hfields = c.hfields[:0]
		c.hstream, c.hend, c.hremain, c.hinvalid, c.hregular = f.StreamID, f.StreamEnded(), maxHeaderList, false, false
		frag := f.HeaderBlockFragment()
		c.hcache = f.HeadersEnded() && keepsTable(frag)
		if c.hcache {
			if fields, ok := c.dcache.get(frag); ok {
				c.hfields = append(c.hfields, fields...)
				return c.onHeaders(c.hstream, c.hfields, c.hend)
			}
		} else {
			c.dcache.epoch++ // the block may change the dynamic table
		}
		return c.headerBlock(frag, f.HeadersEnded())
	case *http2.ContinuationFrame:
		// The framer checks that it follows HEADERS of the same stream.
		c.dcache.epoch++
		return c.headerBlock(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.RSTStreamFrame:
		if s := c.lookup(f.StreamID); s != nil {
			s.onReset(f.ErrCode)
		}
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.wmu.Lock()
			c.writeErr(c.wf.WritePing(true, f.Data))
			c.wmu.Unlock()
			c.markDirty(c)
		}
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil
}

func (c *Conn) lookup(id uint32) *stream {
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	return s
}

func (c *Conn) onData(f *http2.DataFrame) error {
	n := int64(f.Header().Length)
	s := c.lookup(f.StreamID)
	if s == nil || s.recvEnd.Load() {
		c.received(n, false) // dropped
	}
	if s == nil {
		if c.idleID(f.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// A stream that ended: the same answer as while it was half
		// closed (as x/net/http2 gives), whether or not it was forgotten
		// by the time this frame was read.
		c.resetStream(f.StreamID, http2.ErrCodeStreamClosed)
		return nil
	}
	if s.recvEnd.Load() {
		// Data after the sender's END_STREAM (RFC 9113 5.1).
		c.resetStream(f.StreamID, http2.ErrCodeStreamClosed)
		return nil
	}
	c.received(n, true)
	s.onData(f.Data(), f.StreamEnded(), n)
	return nil
}

// idleID reports a stream id that was never opened.
func (c *Conn) idleID(id uint32) bool {
	if c.server {
		c.mu.Lock()
		defer c.mu.Unlock()
		return id%2 == 0 || id > c.lastPeer
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return id%2 == 0 || id >= c.nextID
}

// emit collects a decoded header field (reader only). A field that HTTP/2
// forbids, or a list over maxHeaderList, fails the block.
func (c *Conn) emit(f hpack.HeaderField) {
	if c.hinvalid {
		return
	}
	if size := int(f.Size()); size > c.hremain {
		c.hinvalid = true
		return
	} else {
		c.hremain -= size
	}
	if f.IsPseudo() {
		if c.hregular {
			c.hinvalid = true
			return
		}
	} else {
		c.hregular = true
		if !validName(f.Name) {
			c.hinvalid = true
			return
		}
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		c.hinvalid = true
		return
	}
	c.hfields = append(c.hfields, f)
}

// validName reports a lower-case header field name of token characters.
func validName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		b := n[i]
		if b >= 'A' && b <= 'Z' || !httpguts.IsTokenRune(rune(b)) {
			return false
		}
	}
	return true
}

// headerBlock decodes a fragment of a header block; at the block's end it
// hands the fields on.
func (c *Conn) headerBlock(frag []byte, ended bool) error {
	if len(frag) > 2*c.hremain {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !ended {
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	if c.hinvalid {
		c.resetStream(c.hstream, http2.ErrCodeProtocol)
		return nil
	}
	if c.hcache {
		c.dcache.put(frag, c.hfields)
	}
	return c.onHeaders(c.hstream, c.hfields, c.hend)
}

// onHeaders handles a whole header block. fields is reused afterwards:
// what keeps it copies it.
func (c *Conn) onHeaders(id uint32, fields []hpack.HeaderField, end bool) error {
	if s := c.lookup(id); s != nil {
		s.onHeaders(fields, end)
		return nil
	}
	if !c.server {
		return nil // a stream that already ended
	}
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	s := c.newStream(id)
	// The call is whole before it is in the map, so that a close from
	// another goroutine finds its Stream; it counts as open before the lock
	// is let go, so that Shutdown, which sets goAway under it, waits for it.
	st := newServerStream(s, slices.Clone(fields), end)
	c.mu.Lock()
	if id <= c.lastPeer || c.goAway || c.closed {
		refuse := c.goAway && id > c.lastPeer
		c.mu.Unlock()
		st.cancel()
		if refuse {
			c.resetStream(id, http2.ErrCodeRefusedStream)
			return nil
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.lastPeer = id
	if uint32(c.open.Load()) >= maxStreams {
		c.mu.Unlock()
		st.cancel()
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	c.streams[id] = s
	c.open.Add(1)
	c.mu.Unlock()
	run(c.onStream, st)
	return nil
}

// workers is how many goroutines run new calls' handlers and are reused
// from one call to the next; a call that finds them all busy gets a
// goroutine of its own. A reused goroutine keeps the stack the chain grew
// (a fresh one per call spent a twentieth of the CPU growing stacks).
const workers = 64

type work struct {
	fn func(*Stream)
	st *Stream
}

var (
	workCh     = make(chan work)
	workerOnce sync.Once
)

func run(fn func(*Stream), st *Stream) {
	workerOnce.Do(func() {
		for range workers {
			go func() {
				for w := range workCh {
					w.fn(w.st)
				}
			}()
		}
	})
	select {
	case workCh <- work{fn, st}:
	default:
		go fn(st)
	}
}

// newStream builds a stream with the peer's initial window. Locks are
// taken in the order wmu, then mu; never wmu while holding mu.
func (c *Conn) newStream(id uint32) *stream {
	c.wmu.Lock()
	w := c.peerInitWin
	c.wmu.Unlock()
	return &stream{c: c, id: id, sendWin: w}
}

// resetStream writes RST_STREAM for id and drops the stream.
func (c *Conn) resetStream(id uint32, code http2.ErrCode) {
	if s := c.lookup(id); s != nil {
		s.onReset(code)
	}
	c.wmu.Lock()
	c.writeErr(c.wf.WriteRSTStream(id, code))
	c.wmu.Unlock()
	c.markDirty(c)
}

func (c *Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.wmu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err // a connection error (RFC 9113 6.5.2)
		}
		if s.ID == settingAnswersPings && !c.server {
			c.answersPings.Store(s.Val == 1)
		}
		if s.ID == http2.SettingMaxConcurrentStreams {
			c.mu.Lock()
			c.peerMaxStreams = s.Val
			c.mu.Unlock()
		}
		if s.ID == http2.SettingHeaderTableSize {
			// The peer's decoder table: our encoder stays within it, and
			// the indexes cached for the old table are void.
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			c.ecache.epoch++
		}
		if s.ID == http2.SettingInitialWindowSize {
			if s.Val > 1<<31-1 {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			c.mu.Lock()
			for _, st := range c.streams {
				st.sendWin += delta
			}
			c.mu.Unlock()
		}
		return nil
	})
	if err != nil {
		c.wmu.Unlock()
		return err
	}
	c.writeErr(c.wf.WriteSettingsAck())
	credits := c.drainLocked(nil)
	c.wmu.Unlock()
	c.settledOnce.Do(func() { close(c.settled) })
	c.markDirty(c)
	for _, cr := range credits {
		cr.s.forwarded(cr.n, c)
	}
	return nil
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.wmu.Lock()
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
		if c.sendWin > 1<<31-1 {
			c.wmu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else {
		c.mu.Lock()
		s := c.streams[f.StreamID]
		c.mu.Unlock()
		if s == nil {
			c.wmu.Unlock()
			return nil
		}
		s.sendWin += int64(f.Increment)
		if s.sendWin > 1<<31-1 {
			c.wmu.Unlock()
			c.resetStream(f.StreamID, http2.ErrCodeFlowControl)
			return nil
		}
	}
	credits := c.drainLocked(nil)
	c.wmu.Unlock()
	c.markDirty(c)
	for _, cr := range credits {
		cr.s.forwarded(cr.n, c)
	}
	return nil
}

func (c *Conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goAway = true
	var gone []*stream
	if !c.server {
		// Streams the peer never saw: their callers are told so (refused)
		// and may send them again.
		for id, s := range c.streams {
			if id > f.LastStreamID {
				gone = append(gone, s)
				delete(c.streams, id)
				c.active--
				c.touched++
			}
		}
	}
	drained := !c.server && c.active == 0
	c.mu.Unlock()
	for _, s := range gone {
		s.refused()
	}
	if drained {
		c.fail(errDrained)
	}
}

// errDrained closes a client connection whose peer said GOAWAY once its
// last call ended.
var errDrained = errors.New("h2proxy: upstream went away and its last call ended")

// credit is data of a stream that was forwarded and may be credited back
// to the stream's sender.
type credit struct {
	s *stream
	n int64
}

// drainLocked writes the queued frames that the windows (and room in out)
// now allow and adds the credits they free to credits (under wmu).
func (c *Conn) drainLocked(credits []credit) []credit {
	kept := c.blocked[:0]
	for _, s := range c.blocked {
		credits = s.drainLocked(credits)
		if len(s.q) > 0 {
			kept = append(kept, s)
		}
	}
	clear(c.blocked[len(kept):])
	c.blocked = kept
	return credits
}

// maxID is the largest stream id a client may use.
const maxID = 1<<31 - 1
