// Package accesslog is the filter that writes one line per exchange: verb,
// route, status, duration, sizes, caller, trace id and error, as JSON or
// text, to a file, standard output or the runtime's zap logger.
package accesslog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/filters"
)

var traceparentName = []byte("traceparent")

// Filter is a built access log. It holds a file and a goroutine: Close it.
type Filter struct {
	text   bool
	w      *bufWriter  // nil with Logger
	file   *os.File    // nil for stdout and Logger
	logger *zap.Logger // with Logger
	once   sync.Once
}

var (
	_ filters.Filter = (*Filter)(nil)
	_ io.Closer      = (*Filter)(nil)
)

// New builds the access log described by c (which must be valid), opening
// its file.
func New(c Config, env filters.Env) (*Filter, error) {
	f := &Filter{text: c.Format == FormatText}
	if c.Logger {
		l := env.Logger
		if l == nil {
			l = zap.NewNop()
		}
		f.logger = l.Named(Name)
		return f, nil
	}
	var out io.Writer = os.Stdout
	if c.Path != "" {
		file, err := os.OpenFile(c.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("accesslog: %w", err)
		}
		f.file, out = file, file
	}
	size := c.BufferSize
	if size == 0 {
		size = DefaultBufferSize
	}
	interval := c.FlushInterval.D()
	if interval == 0 {
		interval = DefaultFlushInterval
	}
	f.w = newBufWriter(out, size, interval)
	return f, nil
}

// Close flushes the buffer, stops the flusher and closes the file.
func (f *Filter) Close() error {
	var err error
	f.once.Do(func() {
		if f.w == nil {
			return
		}
		err = f.w.close()
		if n := f.w.dropped.Load(); n > 0 {
			err = errors.Join(err, fmt.Errorf("accesslog: %d lines dropped: the output was too slow", n))
		}
		if f.file != nil {
			err = errors.Join(err, f.file.Close())
		}
		if err != nil {
			err = fmt.Errorf("accesslog: %w", err)
		}
	})
	return err
}

// Wrap returns the logging handler.
func (f *Filter) Wrap(next filters.Handler) filters.Handler {
	return &handler{f: f, next: next}
}

type handler struct {
	f    *Filter
	next filters.Handler
}

type lineBuf struct{ b []byte }

var linePool = sync.Pool{New: func() any { return &lineBuf{b: make([]byte, 0, 512)} }}

// entry is what one line says.
type entry struct {
	start    time.Time
	duration time.Duration
	ex       *filters.Exchange
	status   int
	reqLen   int
	err      error
}

func (h *handler) Handle(ctx context.Context, ex *filters.Exchange) error {
	start := time.Now()
	reqLen := len(ex.Req.Body())
	err := h.next.Handle(ctx, ex)
	e := entry{start: start, duration: time.Since(start), ex: ex, reqLen: reqLen, err: err}
	e.status = ex.Resp.StatusCode()
	if err != nil {
		var fe *filters.Error
		if errors.As(err, &fe) {
			e.status = fe.HTTPStatus
		} else {
			e.status = 500
		}
	}
	f := h.f
	if f.logger != nil {
		f.log(&e)
		return err
	}
	lb := linePool.Get().(*lineBuf)
	if f.text {
		lb.b = appendText(lb.b[:0], &e)
	} else {
		lb.b = appendJSON(lb.b[:0], &e)
	}
	f.w.write(lb.b)
	if cap(lb.b) <= 64<<10 {
		linePool.Put(lb)
	}
	return err
}

func (f *Filter) log(e *entry) {
	ex := e.ex
	fields := []zap.Field{
		zap.String("protocol", ex.Protocol.String()),
		zap.String("listener", ex.Listener),
		zap.ByteString("verb", ex.Req.Header.Method()),
		zap.ByteString("route", ex.Key),
		zap.Int("status", e.status),
		zap.Duration("duration", e.duration),
		zap.Int("req_bytes", e.reqLen),
		zap.Int("resp_bytes", len(ex.Resp.Body())),
		zap.ByteString("caller_app_id", ex.CallerAppID),
		zap.ByteString("trace_id", traceID(ex)),
	}
	if e.err != nil {
		fields = append(fields, zap.String("error", e.err.Error()))
	}
	f.logger.Info("access", fields...)
}

func traceID(ex *filters.Exchange) []byte {
	v := ex.Req.Header.PeekBytes(traceparentName)
	if len(v) < 55 {
		return nil
	}
	return v[3:35]
}

func appendJSON(b []byte, e *entry) []byte {
	ex := e.ex
	b = append(b, `{"time":"`...)
	b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","protocol":"`...)
	b = append(b, ex.Protocol.String()...)
	b = append(b, `","listener":`...)
	b = appendJSONString(b, ex.Listener)
	b = append(b, `,"verb":`...)
	b = appendJSONString(b, ex.Req.Header.Method())
	b = append(b, `,"route":`...)
	b = appendJSONString(b, ex.Key)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(e.duration.Nanoseconds())/1e6, 'f', 3, 64)
	b = append(b, `,"req_bytes":`...)
	b = strconv.AppendInt(b, int64(e.reqLen), 10)
	b = append(b, `,"resp_bytes":`...)
	b = strconv.AppendInt(b, int64(len(ex.Resp.Body())), 10)
	if len(ex.CallerAppID) > 0 {
		b = append(b, `,"caller_app_id":`...)
		b = appendJSONString(b, ex.CallerAppID)
	}
	if id := traceID(ex); id != nil {
		b = append(b, `,"trace_id":`...)
		b = appendJSONString(b, id)
	}
	if e.err != nil {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, e.err.Error())
	}
	return append(b, "}\n"...)
}

// appendText writes: time protocol verb route status duration req_bytes
// resp_bytes, then key=value pairs for what is present.
func appendText(b []byte, e *entry) []byte {
	ex := e.ex
	b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, ex.Protocol.String()...)
	b = append(b, ' ')
	b = appendSafe(b, ex.Req.Header.Method())
	b = append(b, ' ')
	b = appendSafe(b, ex.Key)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, float64(e.duration.Nanoseconds())/1e6, 'f', 3, 64)
	b = append(b, "ms "...)
	b = strconv.AppendInt(b, int64(e.reqLen), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(ex.Resp.Body())), 10)
	if ex.Listener != "" {
		b = append(b, " listener="...)
		b = appendSafe(b, ex.Listener)
	}
	if len(ex.CallerAppID) > 0 {
		b = append(b, " caller="...)
		b = appendSafe(b, ex.CallerAppID)
	}
	if id := traceID(ex); id != nil {
		b = append(b, " trace="...)
		b = appendSafe(b, id)
	}
	if e.err != nil {
		b = append(b, " error="...)
		b = appendJSONString(b, e.err.Error()) // quoted: messages have spaces
	}
	return append(b, '\n')
}

// appendSafe copies s, replacing bytes that would break a text line.
func appendSafe[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == 0x7f {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				switch c {
				case '\n':
					b = append(b, '\\', 'n')
				case '\r':
					b = append(b, '\\', 'r')
				case '\t':
					b = append(b, '\\', 't')
				default:
					b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
				}
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		// A short, non-escaping conversion: the compiler keeps it on the stack.
		r, n := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, string(s[i:i+n])...)
		}
		i += n
	}
	return append(b, '"')
}
