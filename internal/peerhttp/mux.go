package peerhttp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The multiplexed link (version 3). A caller opens a TCP connection to the
// callee's internal port, writes MuxPreface, and then both sides exchange
// frames:
//
//	length  uint32  (big endian) bytes of payload after this header
//	stream  uint32  the call's id, chosen by the caller, increasing
//	type    uint8   FrameRequest, FrameResponse, FrameContinued, FrameCancel,
//	                FrameGoAway, FramePing, FramePong; FlagMore (0x80) on a
//	                message that goes on
//	payload
//
// A request's payload is the HTTP/1.1 request version 1 sends (see the
// package comment), a response's the HTTP/1.1 response. Many calls share one
// connection, answers come in any order, and what several calls write at
// about the same time leaves in one write: the two sidecars make a fraction
// of the system calls one connection per call in flight costs.
//
// A message larger than 64 KiB goes in parts: its first frame (request or
// response) and each FrameContinued but the last carry FlagMore, and the
// frames of other calls may come between them.
//
// FrameCancel (no payload) tells the callee that the caller stopped waiting:
// the call's context is canceled. FrameGoAway (payload: the last stream id
// the callee took) tells the caller that the callee is closing: calls above
// that id were never seen and may be sent again elsewhere.
//
// FramePing (stream 0, no payload) asks the callee for a FramePong (the
// same): a caller whose calls wait and who heard nothing from the callee for
// a while sends one, and gives the connection up when even that goes
// unanswered (a callee host that vanished without closing the connection).
// Version 3 is version 2 with these two frames.
const (
	MuxPreface = "SYL3"
	// MuxVersion is the offer value (MDOffer) of this form.
	MuxVersion = "3"
	// MuxPrefaceV2 and MuxVersionV2 are version 2's: a callee serves it
	// as version 3 (a version 2 caller sends no PING), so that callers of
	// that version keep the link.
	MuxPrefaceV2 = "SYL2"
	MuxVersionV2 = "2"

	FrameRequest  = 1
	FrameResponse = 2
	FrameCancel   = 3
	FrameGoAway   = 4
	// FrameContinued carries the next part of a request or response whose
	// frames had FlagMore.
	FrameContinued = 5
	FramePing      = 6
	FramePong      = 7
	// FlagMore, on a request, response or continued frame, says that the
	// message goes on in a FrameContinued of the same stream.
	FlagMore = 0x80

	// chunk is the largest payload of one frame of a message: a large body
	// goes in parts, and the frames of other calls can leave between them.
	chunk = 64 << 10

	frameHeaderLen = 9
	// MaxFrame bounds a frame's payload whatever the body limits say.
	MaxFrame = 256 << 20
	// writeTimeout bounds one write: a peer that stops reading loses its
	// connection instead of holding up every call on it.
	writeTimeout = 10 * time.Second
	// maxKeptBuf is the largest write buffer kept for reuse.
	maxKeptBuf = 256 << 10
)

// ErrNotSent wraps the failure of a call that never reached the callee: its
// connection could not be made, went away before the call was handed to
// the kernel, or the callee said (GOAWAY) that it did not take it. Such a
// call may be sent again, whatever its verb.
var ErrNotSent = errors.New("peer link: the request was not sent")

// errProtocol is a frame that breaks the link's rules.
var errProtocol = errors.New("peer link: protocol error")

// frameWriter batches the frames of a connection: the goroutine that puts a
// frame into an empty buffer yields once, so that the frames other
// goroutines have ready join it, and then writes the lot.
type frameWriter struct {
	c   net.Conn
	mu  sync.Mutex // guards buf, pending, gen
	buf []byte
	// pending: someone is going to flush buf.
	pending bool
	// gen numbers the batches: a frame added now leaves with batch gen.
	gen uint64
	// next is the last stream id a request frame took.
	next uint32
	// wmu makes one write at a time; spare is the buffer not in use.
	wmu   sync.Mutex
	spare []byte
	// attempted is the last batch handed to the kernel (or tried).
	attempted atomic.Uint64
	err       atomic.Pointer[error]
}

func newFrameWriter(c net.Conn) *frameWriter {
	return &frameWriter{c: c, gen: 1, buf: make([]byte, 0, 4096), spare: make([]byte, 0, 4096)}
}

// appendFrameHeader appends a frame header for a payload of n bytes.
func appendFrameHeader(b []byte, n int, stream uint32, typ byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = binary.BigEndian.AppendUint32(b, stream)
	return append(b, typ)
}

// send adds a frame and sees that it is written.
func (w *frameWriter) send(stream uint32, typ byte, payload []byte) {
	_, first := w.add(stream, typ, nil, payload, nil)
	w.kick(first)
}

// add queues a frame whose payload is head and then body. A request frame
// (stream 0) gets the next stream id here, so that ids go out in
// increasing order. The batch the frame leaves with goes into gen (when not
// nil) before the batch can be written. The caller must pass first to kick.
func (w *frameWriter) add(stream uint32, typ byte, head, body []byte, gen *atomic.Uint64) (id uint32, first bool) {
	return w.addPart(stream, typ, head, body, 0, len(head)+len(body), gen)
}

// addPart is add for bytes [from, to) of head and body, with FlagMore when
// the message goes on after to.
func (w *frameWriter) addPart(stream uint32, typ byte, head, body []byte, from, to int, gen *atomic.Uint64) (id uint32, first bool) {
	if to < len(head)+len(body) {
		typ |= FlagMore
	}
	w.mu.Lock()
	if typ&^FlagMore == FrameRequest {
		w.next++
		stream = w.next
	}
	first = !w.pending
	w.pending = true
	w.buf = appendFrameHeader(w.buf, to-from, stream, typ)
	if from < len(head) {
		w.buf = append(w.buf, head[from:min(to, len(head))]...)
	}
	if to > len(head) {
		w.buf = append(w.buf, body[max(from-len(head), 0):to-len(head)]...)
	}
	if gen != nil {
		gen.Store(w.gen)
	}
	w.mu.Unlock()
	return stream, first
}

// firstPart is where the first frame of a message of n bytes ends.
func firstPart(n int) int { return min(n, chunk) }

// sendRest queues the parts of a message after its first (which ended at
// from), one frame at a time, each written before the next is added so
// that other calls' frames go between them. It stops early if the
// connection failed.
func (w *frameWriter) sendRest(stream uint32, head, body []byte, from int, gen *atomic.Uint64) {
	n := len(head) + len(body)
	for from < n && w.err.Load() == nil {
		to := min(from+chunk, n)
		_, first := w.addPart(stream, FrameContinued, head, body, from, to, gen)
		w.kick(first)
		from = to
	}
}

// kick writes the buffer when the frame just added made it non-empty.
func (w *frameWriter) kick(first bool) {
	if first {
		runtime.Gosched() // let the calls that are ready add theirs
		w.flush()
	}
}

// sent reports whether a frame queued with batch gen may have reached the
// kernel. The connection must be closed first, so that no write starts
// after the answer.
func (w *frameWriter) sent(gen uint64) bool {
	return gen != 0 && gen <= w.attempted.Load()
}

// flush writes what is buffered. Only the goroutine that set pending calls
// it, so everything added reaches a write.
func (w *frameWriter) flush() {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	buf := w.buf
	w.buf = w.spare[:0]
	w.pending = false
	gen := w.gen
	w.gen++
	w.mu.Unlock()
	w.attempted.Store(gen)
	if w.err.Load() == nil && len(buf) > 0 {
		_ = w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.c.Write(buf); err != nil {
			e := err // a copy, so that err's address escapes on this path only
			w.err.Store(&e)
			_ = w.c.Close() // the reader sees it and fails the calls
		}
	}
	if cap(buf) > maxKeptBuf {
		buf = make([]byte, 0, 4096)
	}
	w.spare = buf[:0]
}

// frameReader reads frames off a connection.
type frameReader struct {
	br      *bufio.Reader
	hdr     [frameHeaderLen]byte
	payload []byte
	// msg reads one HTTP/1.1 message out of the payload for fasthttp.
	src bytes.Reader
	msg *bufio.Reader
}

func newFrameReader(c io.Reader) *frameReader {
	fr := &frameReader{br: bufio.NewReaderSize(c, 64<<10)}
	fr.msg = bufio.NewReaderSize(&fr.src, 64<<10)
	return fr
}

// next reads a frame header: the payload's length, the stream and the type.
func (fr *frameReader) next() (n int, stream uint32, typ byte, err error) {
	if _, err = io.ReadFull(fr.br, fr.hdr[:]); err != nil {
		return 0, 0, 0, err
	}
	n = int(binary.BigEndian.Uint32(fr.hdr[0:4]))
	if n > MaxFrame {
		return 0, 0, 0, fmt.Errorf("%w: frame of %d bytes", errProtocol, n)
	}
	return n, binary.BigEndian.Uint32(fr.hdr[4:8]), fr.hdr[8], nil
}

// read reads a payload of n bytes into fr.payload.
func (fr *frameReader) read(n int) error {
	if cap(fr.payload) < n {
		fr.payload = make([]byte, n)
	}
	fr.payload = fr.payload[:n]
	_, err := io.ReadFull(fr.br, fr.payload)
	return err
}

// release drops a large payload buffer once the payload is used.
func (fr *frameReader) release() {
	if cap(fr.payload) > maxKeptBuf {
		fr.payload = nil
		fr.src.Reset(nil)
	}
}

// skip discards a payload of n bytes.
func (fr *frameReader) skip(n int) error {
	_, err := fr.br.Discard(n)
	return err
}

// parse parses the one HTTP/1.1 message in b with parse; b with bytes
// after the message is malformed too.
func (fr *frameReader) parse(b []byte, parse func(*bufio.Reader) error) error {
	fr.src.Reset(b)
	fr.msg.Reset(&fr.src)
	err := parse(fr.msg)
	if err == nil && (fr.msg.Buffered() != 0 || fr.src.Len() != 0) {
		err = errors.New("bytes after the message")
	}
	fr.src.Reset(nil)
	return err
}
