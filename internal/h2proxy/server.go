package h2proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Stream is a call accepted on a downstream connection. The handler given
// to Serve gets each new Stream on a goroutine of its own; it either
// bridges it (Bridge) or answers it with a status (Fail).
type Stream struct {
	s        *stream
	fields   []hpack.HeaderField
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	doneOnce sync.Once

	// the status of the answer, from the trailers sent (under s.c.wmu)
	code    codes.Code
	msg     string
	hasCode bool
	failed  atomic.Bool
}

func newServerStream(s *stream, fields []hpack.HeaderField, end bool) *Stream {
	st := &Stream{s: s, fields: fields, done: make(chan struct{})}
	s.ss = st
	if end {
		s.recvEnd.Store(true)
		s.earlyEnd = true
	}
	if d, ok := Timeout(st.Header("grpc-timeout")); ok {
		st.ctx, st.cancel = context.WithTimeout(s.c.ctx, d)
	} else {
		st.ctx, st.cancel = context.WithCancel(s.c.ctx)
	}
	return st
}

// Fields returns the request's header fields, pseudo-headers included.
func (st *Stream) Fields() []hpack.HeaderField { return st.fields }

// Header returns the first value of the named field ("" if absent).
func (st *Stream) Header(name string) string {
	for _, f := range st.fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// FullMethod returns the call's method, "/pkg.Service/Method".
func (st *Stream) FullMethod() string { return st.Header(":path") }

// Native returns the Stream itself: clusters that bridge frames take it.
func (st *Stream) Native() any { return st }

// Context is cancelled when the call ends, is reset, or its deadline
// (grpc-timeout) passes.
func (st *Stream) Context() context.Context { return st.ctx }

// RemoteAddr is the caller's address.
func (st *Stream) RemoteAddr() net.Addr { return st.s.c.nc.RemoteAddr() }

// Answered reports whether response headers were sent or queued, after
// which a failure can no longer be a fresh answer.
func (st *Stream) Answered() bool {
	c := st.s.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return st.s.sentHdr || st.s.resetOut
}

// finish ends the call; data that arrived for a call never bridged is
// dropped. It may run under the connection's wmu (lock order: wmu, then
// the stream's mu).
func (st *Stream) finish() {
	st.doneOnce.Do(func() {
		close(st.done)
		st.cancel()
		st.s.mu.Lock()
		early := st.s.dropEarlyLocked() // 0 once bridged: Bridge took it
		st.s.mu.Unlock()
		st.s.c.released(early, nil)
	})
}

// noteStatus records the status of the trailers being sent (under wmu).
func (st *Stream) noteStatus(fields []hpack.HeaderField) {
	for _, f := range fields {
		switch f.Name {
		case "grpc-status":
			if n, err := strconv.Atoi(f.Value); err == nil {
				st.code, st.hasCode = codes.Code(n), true
			}
		case "grpc-message":
			st.msg = decodeMessage(f.Value)
		}
	}
}

// setStatus records the outcome of a call ended without trailers.
func (st *Stream) setStatus(code codes.Code, msg string) {
	c := st.s.c
	c.wmu.Lock()
	if !st.hasCode {
		st.code, st.msg, st.hasCode = code, msg, true
	}
	c.wmu.Unlock()
}

// Err returns the call's outcome once Done: nil for OK, the status sent
// otherwise, Canceled for a reset.
func (st *Stream) Err() error {
	c := st.s.c
	c.wmu.Lock()
	code, msg, has := st.code, st.msg, st.hasCode
	c.wmu.Unlock()
	if !has {
		return status.Error(codes.Canceled, "h2proxy: stream reset")
	}
	if code == codes.OK {
		return nil
	}
	return status.Error(code, msg)
}

// Fail answers the call with a status (trailers only, or trailers after
// the headers already sent) unless it already ended. details is a
// google.rpc.Status in wire form for grpc-status-details-bin, or nil.
func (st *Stream) Fail(code codes.Code, msg string, details []byte) {
	st.failed.Store(true)
	fields := make([]hpack.HeaderField, 0, 5)
	c := st.s.c
	c.wmu.Lock()
	hdr := st.s.sentHdr
	c.wmu.Unlock()
	if !hdr {
		fields = append(fields, hpack.HeaderField{Name: ":status", Value: "200"},
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	fields = append(fields, hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(code))})
	if msg != "" {
		fields = append(fields, hpack.HeaderField{Name: "grpc-message", Value: encodeMessage(msg)})
	}
	if len(details) > 0 {
		fields = append(fields, hpack.HeaderField{Name: "grpc-status-details-bin",
			Value: base64.RawStdEncoding.EncodeToString(details)})
	}
	st.s.sendHeaders(fields, true, nil)
	st.finish()
}

// failUpstream answers a bridged call whose upstream connection failed.
func (st *Stream) failUpstream(err error) {
	st.Fail(codes.Unavailable, fmt.Sprintf("upstream connection closed: %v", err), nil)
}

// Bridge opens a stream with fields on up and forwards the call both ways
// until its answer is complete, ctx ends, or either side resets. It
// returns the call's outcome (Err). An error before anything was sent
// upstream leaves the call unanswered for the caller to Fail.
func (st *Stream) Bridge(ctx context.Context, up *Pool, fields []hpack.HeaderField) error {
	s := st.s
	p, err := up.open(ctx, fields, s)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.resetIn {
		s.mu.Unlock()
		p.reset(http2.ErrCodeCancel, nil)
		return status.Error(codes.Canceled, "h2proxy: the caller reset the call")
	}
	data, n, end := s.early, s.earlyN, s.earlyEnd
	s.early, s.earlyN = nil, 0
	s.peer = p
	written := true
	if len(data) > 0 || end {
		written = p.sendData(data, end, s, n, nil)
	} else {
		p.flushBy(nil)
	}
	s.mu.Unlock()
	if written {
		s.forwarded(n, nil)
	}
	select {
	case <-st.done:
	case <-ctx.Done():
		p.reset(http2.ErrCodeCancel, nil)
		code := codes.Canceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code = codes.DeadlineExceeded
		}
		st.Fail(code, ctx.Err().Error(), nil)
	}
	if !p.removed.Load() {
		p.reset(http2.ErrCodeCancel, nil)
	}
	return st.Err()
}

// NewServerConn wraps an accepted connection: each new call goes to
// onStream on a goroutine of its own, with ctx the parent of every call's
// context. Serve it, Shutdown it.
func NewServerConn(ctx context.Context, nc net.Conn, onStream func(*Stream)) *Conn {
	c := newConn(nc, true)
	c.ctx = ctx
	c.onStream = onStream
	return c
}

// Serve reads the client preface and serves the connection until it
// closes.
func (c *Conn) Serve() error {
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		c.fail(errors.New("h2proxy: no HTTP/2 client preface"))
		return errors.New("h2proxy: no HTTP/2 client preface")
	}
	c.wmu.Lock()
	c.writeErr(c.settings())
	c.flushLocked()
	c.wmu.Unlock()
	c.readLoop()
	c.mu.Lock()
	err := c.closeErr
	c.mu.Unlock()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// Shutdown sends GOAWAY, lets the calls in flight finish until ctx ends,
// then closes the connection.
func (c *Conn) Shutdown(ctx context.Context) {
	c.mu.Lock()
	c.goAway = true
	last := c.lastPeer
	c.mu.Unlock()
	c.wmu.Lock()
	c.writeErr(c.wf.WriteGoAway(last, http2.ErrCodeNo, nil))
	c.flushLocked()
	c.wmu.Unlock()
	if c.open.Load() == 0 {
		c.idleOnce.Do(func() { close(c.idle) })
	}
	select {
	case <-c.idle:
	case <-c.done:
	case <-ctx.Done():
	}
	// The last answer may still be in the buffer.
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
	c.settle()
	c.Close()
}

// settle waits until the writer goroutine has sent what the peer's socket
// did not take at once, or the connection failed (writeStall at most).
func (c *Conn) settle() {
	for {
		c.wmu.Lock()
		busy := c.backlog && c.werr == nil
		c.wmu.Unlock()
		if !busy {
			return
		}
		select {
		case <-c.done:
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// Timeout parses a grpc-timeout value ("100m", "5S").
func Timeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// encodeMessage percent-encodes a grpc-message value as gRPC does.
func encodeMessage(msg string) string {
	ok := true
	for i := 0; i < len(msg); i++ {
		if b := msg[i]; b < 0x20 || b > 0x7e || b == '%' {
			ok = false
			break
		}
	}
	if ok {
		return msg
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(msg)+8)
	for i := 0; i < len(msg); i++ {
		b := msg[i]
		if b < 0x20 || b > 0x7e || b == '%' {
			out = append(out, '%', hex[b>>4], hex[b&15])
		} else {
			out = append(out, b)
		}
	}
	return string(out)
}

// decodeMessage undoes encodeMessage (lenient: a bad escape stays as is).
func decodeMessage(v string) string {
	if !containsPercent(v) {
		return v
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) {
			if b, err := strconv.ParseUint(v[i+1:i+3], 16, 8); err == nil {
				out = append(out, byte(b))
				i += 2
				continue
			}
		}
		out = append(out, v[i])
	}
	return string(out)
}

func containsPercent(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			return true
		}
	}
	return false
}

// DeleteField removes every field of that name from the request's fields
// (before the call is bridged).
func (st *Stream) DeleteField(name string) {
	st.fields = slices.DeleteFunc(st.fields, func(f hpack.HeaderField) bool { return f.Name == name })
}

// EncodeTimeout formats d as a grpc-timeout value: at most eight digits, in
// the finest unit that fits (as grpc-go does).
func EncodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	const max = 99999999
	for _, u := range []struct {
		d time.Duration
		c string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if n := (d + u.d - 1) / u.d; n <= max {
			return strconv.FormatInt(int64(n), 10) + u.c
		}
	}
	n := min((d+time.Hour-1)/time.Hour, max)
	return strconv.FormatInt(int64(n), 10) + "H"
}

// RemainingTimeout returns the grpc-timeout to send upstream for a call
// under ctx: what is left of its deadline, so that the next hop does not
// start the caller's whole timeout afresh.
func RemainingTimeout(ctx context.Context) (string, bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		return "", false
	}
	return EncodeTimeout(time.Until(dl)), true
}

// UpstreamTimeout is the grpc-timeout field f as it goes upstream for a
// call under ctx: what is left of the deadline, never indexed, since a new
// value on every call would otherwise move the HPACK indexes of the fields
// that repeat.
func UpstreamTimeout(ctx context.Context, f hpack.HeaderField) hpack.HeaderField {
	if v, ok := RemainingTimeout(ctx); ok {
		f.Value = v
	}
	f.Sensitive = true
	return f
}
