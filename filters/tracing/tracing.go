// Package tracing is the filter that propagates W3C trace context
// (traceparent, tracestate, baggage) and its gRPC binary form
// (grpc-trace-bin) across the sidecar, starting a trace when none arrives.
// Spans are not exported yet.
package tracing

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"

	"github.com/valyala/fasthttp"

	"github.com/switchyard-proxy/switchyard/filters"
)

// Header names.
const (
	TraceparentHeader = "traceparent"
	TracestateHeader  = "tracestate"
	BaggageHeader     = "baggage"
	GRPCTraceBin      = "grpc-trace-bin"
)

var (
	traceparentName = []byte(TraceparentHeader)
	tracestateName  = []byte(TracestateHeader)
	grpcTraceBin    = []byte(GRPCTraceBin)
)

// SpanContext is the part of a trace context that is propagated.
type SpanContext struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   byte // bit 0: sampled
}

// Sampled reports the sampled flag.
func (sc SpanContext) Sampled() bool { return sc.Flags&1 == 1 }

// traceparentLen is the length of a version 00 traceparent:
// "00-" 32 hex "-" 16 hex "-" 2 hex.
const traceparentLen = 55

// ParseTraceparent decodes a traceparent header. Versions above 00 are read
// as 00 (W3C: parse the 00 fields, ignore what follows); version ff, bad hex,
// upper-case hex and all-zero ids are invalid.
func ParseTraceparent(v []byte) (sc SpanContext, ok bool) {
	if len(v) < traceparentLen || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return sc, false
	}
	var ver [1]byte
	if !decodeHex(ver[:], v[0:2]) || ver[0] == 0xff {
		return sc, false
	}
	if ver[0] == 0 && len(v) != traceparentLen {
		return sc, false
	}
	if len(v) > traceparentLen && v[traceparentLen] != '-' {
		return sc, false
	}
	var flags [1]byte
	if !decodeHex(sc.TraceID[:], v[3:35]) || !decodeHex(sc.SpanID[:], v[36:52]) || !decodeHex(flags[:], v[53:55]) {
		return sc, false
	}
	sc.Flags = flags[0]
	if sc.TraceID == ([16]byte{}) || sc.SpanID == ([8]byte{}) {
		return sc, false
	}
	return sc, true
}

// decodeHex decodes lower-case hex only, as W3C requires.
func decodeHex(dst, src []byte) bool {
	for _, c := range src {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	_, err := hex.Decode(dst, src)
	return err == nil
}

// AppendTraceparent appends sc as a version 00 traceparent.
func AppendTraceparent(dst []byte, sc SpanContext) []byte {
	var b [traceparentLen]byte
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], sc.TraceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], sc.SpanID[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{sc.Flags})
	return append(dst, b[:]...)
}

// binaryLen is the length of the OpenCensus binary format daprd uses for
// grpc-trace-bin: version 0, field 0 trace id, field 1 span id, field 2
// options.
const binaryLen = 29

// ParseBinary decodes grpc-trace-bin. It accepts the base64 form (what is on
// the gRPC wire and in an Exchange's headers), padded or not, and the raw
// bytes (what grpc-go's metadata holds after decoding).
func ParseBinary(v []byte) (sc SpanContext, ok bool) {
	if len(v) > 0 && v[0] != 0 { // raw bytes start with version 0; base64 text never does
		var buf [48]byte
		if base64.StdEncoding.DecodedLen(len(v)) > len(buf) {
			return sc, false
		}
		n, err := base64.StdEncoding.Decode(buf[:], v)
		if err != nil {
			n, err = base64.RawStdEncoding.Decode(buf[:], v)
			if err != nil {
				return sc, false
			}
		}
		return parseRawBinary(buf[:n])
	}
	return parseRawBinary(v)
}

func parseRawBinary(b []byte) (sc SpanContext, ok bool) {
	if len(b) < 18 || b[0] != 0 || b[1] != 0 {
		return sc, false
	}
	copy(sc.TraceID[:], b[2:18])
	b = b[18:]
	if len(b) >= 9 && b[0] == 1 {
		copy(sc.SpanID[:], b[1:9])
		b = b[9:]
	}
	if len(b) >= 2 && b[0] == 2 {
		sc.Flags = b[1]
	}
	if sc.TraceID == ([16]byte{}) {
		return sc, false
	}
	return sc, true
}

// AppendBinary appends sc in the raw grpc-trace-bin form.
func AppendBinary(dst []byte, sc SpanContext) []byte {
	var b [binaryLen]byte
	copy(b[2:18], sc.TraceID[:])
	b[18] = 1
	copy(b[19:27], sc.SpanID[:])
	b[27] = 2
	b[28] = sc.Flags
	return append(dst, b[:]...)
}

// TraceID returns the hex trace id of the request's traceparent (as this
// filter set it), or nil. The slice points into the header: copy it to keep
// it after the exchange.
func TraceID(h *fasthttp.RequestHeader) []byte {
	v := h.PeekBytes(traceparentName)
	if len(v) < traceparentLen {
		return nil
	}
	return v[3:35]
}

// Filter propagates trace context.
type Filter struct {
	rate       float64
	respHeader bool
}

var _ filters.Filter = (*Filter)(nil)

// Wrap returns the propagating handler.
func (f *Filter) Wrap(next filters.Handler) filters.Handler {
	return &handler{rate: f.rate, respHeader: f.respHeader, next: next}
}

type handler struct {
	rate       float64
	respHeader bool
	next       filters.Handler
}

func (h *handler) Handle(ctx context.Context, ex *filters.Exchange) error {
	hdr := &ex.Req.Header
	var sc SpanContext
	ok := false
	bin := hdr.PeekBytes(grpcTraceBin)
	hasBin := len(bin) > 0
	if hasBin {
		sc, ok = ParseBinary(bin)
	}
	if !ok {
		sc, ok = ParseTraceparent(hdr.PeekBytes(traceparentName))
	}
	if !ok {
		// Start a trace. tracestate belongs to the trace that was not
		// valid, so it goes; baggage is independent and stays.
		putUint64(sc.TraceID[:8], rand.Uint64())
		putUint64(sc.TraceID[8:], rand.Uint64()|1) // never all zero
		sc.Flags = 0
		if h.rate >= 1 || (h.rate > 0 && rand.Float64() < h.rate) {
			sc.Flags = 1
		}
		hdr.DelBytes(tracestateName)
	}
	// Our hop is a new span whose parent is the incoming one.
	putUint64(sc.SpanID[:], rand.Uint64()|1)

	var buf [traceparentLen]byte
	tp := AppendTraceparent(buf[:0], sc)
	hdr.SetBytesKV(traceparentName, tp)
	if hasBin {
		// fasthttp headers cannot carry raw bytes (it turns CR and LF into
		// spaces), so the Exchange carries -bin metadata base64-encoded,
		// unpadded, as on the gRPC wire.
		var raw [binaryLen]byte
		var enc [39]byte // base64.RawStdEncoding.EncodedLen(binaryLen)
		base64.RawStdEncoding.Encode(enc[:], AppendBinary(raw[:0], sc))
		hdr.SetBytesKV(grpcTraceBin, enc[:])
	}

	err := h.next.Handle(ctx, ex)

	if h.respHeader && ex.Protocol == filters.ProtocolHTTP && len(ex.Resp.Header.PeekBytes(traceparentName)) == 0 {
		ex.Resp.Header.SetBytesKV(traceparentName, tp)
	}
	return err
}

func putUint64(b []byte, v uint64) {
	_ = b[7]
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}
