package tracing

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

const (
	inTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	inSpan   = "00f067aa0ba902b7"
	inParent = "00-" + inTrace + "-" + inSpan + "-01"
)

// seen records what the next handler received.
type seen struct {
	traceparent, tracestate, baggage, bin string
	setRespTP                             string // traceparent the app answers with
}

func (s *seen) Handle(_ context.Context, ex *filters.Exchange) error {
	s.traceparent = string(ex.Req.Header.Peek(TraceparentHeader))
	s.tracestate = string(ex.Req.Header.Peek(TracestateHeader))
	s.baggage = string(ex.Req.Header.Peek(BaggageHeader))
	s.bin = string(ex.Req.Header.Peek(GRPCTraceBin))
	if s.setRespTP != "" {
		ex.Resp.Header.Set(TraceparentHeader, s.setRespTP)
	}
	return nil
}

func build(t testing.TB, raw map[string]any, next filters.Handler) filters.Handler {
	t.Helper()
	fac := factory{}
	cfg := fac.NewConfig()
	if err := config.DecodeStrict(raw, cfg); err != nil {
		t.Fatal(err)
	}
	flt, err := fac.Build(cfg, filters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return flt.Wrap(next)
}

func binOf(trace, span string, flags byte) []byte {
	var sc SpanContext
	hex.Decode(sc.TraceID[:], []byte(trace))
	hex.Decode(sc.SpanID[:], []byte(span))
	sc.Flags = flags
	return AppendBinary(nil, sc)
}

func TestPropagation(t *testing.T) {
	tests := []struct {
		name      string
		cfg       map[string]any
		proto     filters.Protocol
		headers   map[string]string
		appResp   string
		wantTrace string // "" : a new trace id
		wantFlags string
		wantState string
		wantBag   string
		wantBin   string // "base64" (forwarded, unpadded) or "" (none)
		wantResp  string // "ours", "app" or "none"
	}{
		{
			name:      "valid traceparent keeps trace, state and baggage",
			headers:   map[string]string{TraceparentHeader: inParent, TracestateHeader: "congo=t61rcWkgMzE", BaggageHeader: "user=alice"},
			wantTrace: inTrace, wantFlags: "01", wantState: "congo=t61rcWkgMzE", wantBag: "user=alice", wantResp: "ours",
		},
		{
			name:      "unsampled parent stays unsampled",
			headers:   map[string]string{TraceparentHeader: "00-" + inTrace + "-" + inSpan + "-00"},
			wantTrace: inTrace, wantFlags: "00", wantResp: "ours",
		},
		{
			name:      "future version is read as 00",
			headers:   map[string]string{TraceparentHeader: "01-" + inTrace + "-" + inSpan + "-01-extra"},
			wantTrace: inTrace, wantFlags: "01", wantResp: "ours",
		},
		{
			name:      "missing starts a sampled trace",
			headers:   map[string]string{BaggageHeader: "k=v"},
			wantFlags: "01", wantBag: "k=v", wantResp: "ours",
		},
		{
			name:      "sampling rate 0 starts unsampled traces",
			cfg:       map[string]any{"sampling_rate": 0},
			wantFlags: "00", wantResp: "ours",
		},
		{
			name:      "invalid traceparent drops tracestate",
			headers:   map[string]string{TraceparentHeader: "00-" + strings.ToUpper(inTrace) + "-" + inSpan + "-01", TracestateHeader: "a=b"},
			wantFlags: "01", wantResp: "ours",
		},
		{name: "zero trace id", headers: map[string]string{TraceparentHeader: "00-" + strings.Repeat("0", 32) + "-" + inSpan + "-01"}, wantFlags: "01", wantResp: "ours"},
		{name: "zero span id", headers: map[string]string{TraceparentHeader: "00-" + inTrace + "-" + strings.Repeat("0", 16) + "-01"}, wantFlags: "01", wantResp: "ours"},
		{name: "version ff", headers: map[string]string{TraceparentHeader: "ff-" + inTrace + "-" + inSpan + "-01"}, wantFlags: "01", wantResp: "ours"},
		{name: "00 with trailing data", headers: map[string]string{TraceparentHeader: inParent + "-x"}, wantFlags: "01", wantResp: "ours"},
		{name: "truncated", headers: map[string]string{TraceparentHeader: inParent[:40]}, wantFlags: "01", wantResp: "ours"},
		{
			name:      "app's own traceparent is kept on the response",
			headers:   map[string]string{TraceparentHeader: inParent},
			appResp:   "00-" + inTrace + "-1111111111111111-01",
			wantTrace: inTrace, wantFlags: "01", wantResp: "app",
		},
		{
			name:      "no response header when disabled",
			cfg:       map[string]any{"no_response_header": true},
			headers:   map[string]string{TraceparentHeader: inParent},
			wantTrace: inTrace, wantFlags: "01", wantResp: "none",
		},
		{
			name:      "grpc: no response header",
			proto:     filters.ProtocolGRPC,
			headers:   map[string]string{TraceparentHeader: inParent},
			wantTrace: inTrace, wantFlags: "01", wantResp: "none",
		},
		{
			name:      "grpc-trace-bin base64 wins over traceparent",
			proto:     filters.ProtocolGRPC,
			headers:   map[string]string{GRPCTraceBin: base64.StdEncoding.EncodeToString(binOf("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1)), TraceparentHeader: inParent},
			wantTrace: "0af7651916cd43dd8448eb211c80319c", wantFlags: "01", wantBin: "base64", wantResp: "none",
		},
		{
			name:      "grpc-trace-bin raw bytes",
			proto:     filters.ProtocolGRPC,
			headers:   map[string]string{GRPCTraceBin: string(binOf(inTrace, "b7ad6b7169203331", 1))},
			wantTrace: inTrace, wantFlags: "01", wantBin: "base64", wantResp: "none",
		},
		{
			name:      "grpc-trace-bin base64",
			proto:     filters.ProtocolInternal,
			headers:   map[string]string{GRPCTraceBin: base64.RawStdEncoding.EncodeToString(binOf("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 0))},
			wantTrace: "0af7651916cd43dd8448eb211c80319c", wantFlags: "00", wantBin: "base64", wantResp: "none",
		},
		{
			name:      "invalid grpc-trace-bin falls back to traceparent",
			proto:     filters.ProtocolGRPC,
			headers:   map[string]string{GRPCTraceBin: "!!!", TraceparentHeader: inParent},
			wantTrace: inTrace, wantFlags: "01", wantBin: "base64", wantResp: "none",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &seen{setRespTP: tt.appResp}
			h := build(t, tt.cfg, rec)
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			ex.Protocol = tt.proto
			ex.SetInvoke([]byte("orders"), []byte("neworder"))
			for k, v := range tt.headers {
				ex.Req.Header.Set(k, v)
			}
			if err := h.Handle(context.Background(), ex); err != nil {
				t.Fatal(err)
			}
			out, ok := ParseTraceparent([]byte(rec.traceparent))
			if !ok {
				t.Fatalf("forwarded traceparent %q is not valid", rec.traceparent)
			}
			gotTrace := hex.EncodeToString(out.TraceID[:])
			if tt.wantTrace != "" && gotTrace != tt.wantTrace {
				t.Errorf("trace id %s, want %s", gotTrace, tt.wantTrace)
			}
			if tt.wantTrace == "" && gotTrace == inTrace {
				t.Errorf("an invalid traceparent's trace id was kept")
			}
			if got := rec.traceparent[53:]; got != tt.wantFlags {
				t.Errorf("flags %s, want %s", got, tt.wantFlags)
			}
			if strings.Contains(rec.traceparent, inSpan) || strings.Contains(rec.traceparent, "b7ad6b7169203331") {
				t.Errorf("span id not replaced: %s", rec.traceparent)
			}
			if rec.tracestate != tt.wantState {
				t.Errorf("tracestate %q, want %q", rec.tracestate, tt.wantState)
			}
			if rec.baggage != tt.wantBag {
				t.Errorf("baggage %q, want %q", rec.baggage, tt.wantBag)
			}
			switch tt.wantBin {
			case "":
				if rec.bin != "" {
					t.Errorf("grpc-trace-bin %q appeared", rec.bin)
				}
			case "base64":
				raw, err := base64.RawStdEncoding.DecodeString(rec.bin)
				if err != nil {
					t.Fatalf("grpc-trace-bin %q is not unpadded base64: %v", rec.bin, err)
				}
				bsc, ok := ParseBinary(raw)
				if !ok || bsc != out {
					t.Errorf("grpc-trace-bin %x = %+v, want the traceparent's %+v", raw, bsc, out)
				}
			}
			resp := string(ex.Resp.Header.Peek(TraceparentHeader))
			switch tt.wantResp {
			case "ours":
				if resp != rec.traceparent {
					t.Errorf("response traceparent %q, want %q", resp, rec.traceparent)
				}
			case "app":
				if resp != tt.appResp {
					t.Errorf("response traceparent %q, want the app's %q", resp, tt.appResp)
				}
			case "none":
				if resp != "" {
					t.Errorf("response traceparent %q, want none", resp)
				}
			}
			if got := TraceID(&ex.Req.Header); string(got) != gotTrace {
				t.Errorf("TraceID = %s, want %s", got, gotTrace)
			}
		})
	}
}

func TestSamplingRate(t *testing.T) {
	rec := &seen{}
	h := build(t, map[string]any{"sampling_rate": 0.25}, rec)
	sampled := 0
	const n = 4000
	for range n {
		ex := filters.AcquireExchange(true)
		_ = h.Handle(context.Background(), ex)
		if strings.HasSuffix(rec.traceparent, "-01") {
			sampled++
		}
		filters.ReleaseExchange(ex)
	}
	if sampled < n/4-200 || sampled > n/4+200 {
		t.Fatalf("%d of %d sampled at rate 0.25", sampled, n)
	}
}

func TestNewIDsDiffer(t *testing.T) {
	rec := &seen{}
	h := build(t, nil, rec)
	seenIDs := map[string]bool{}
	for range 100 {
		ex := filters.AcquireExchange(true)
		_ = h.Handle(context.Background(), ex)
		filters.ReleaseExchange(ex)
		if seenIDs[rec.traceparent] {
			t.Fatalf("traceparent %s generated twice", rec.traceparent)
		}
		seenIDs[rec.traceparent] = true
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	raw := binOf(inTrace, inSpan, 1)
	if len(raw) != binaryLen || !bytes.Equal(raw[:2], []byte{0, 0}) || raw[18] != 1 || raw[27] != 2 {
		t.Fatalf("layout %x", raw)
	}
	sc, ok := ParseBinary(raw)
	if !ok || hex.EncodeToString(sc.TraceID[:]) != inTrace || hex.EncodeToString(sc.SpanID[:]) != inSpan || !sc.Sampled() {
		t.Fatalf("parsed %+v, %v", sc, ok)
	}
	for _, bad := range [][]byte{nil, {0}, {1, 0}, make([]byte, 29)} {
		if _, ok := ParseBinary(bad); ok {
			t.Errorf("%x accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, r := range []float64{-0.1, 1.5} {
		if err := (&Config{SamplingRate: &r}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "tracing: ") {
			t.Errorf("rate %v: err = %v", r, err)
		}
	}
	half := 0.5
	if err := (&Config{SamplingRate: &half}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestAllocs(t *testing.T) {
	h := build(t, nil, filters.HandlerFunc(func(context.Context, *filters.Exchange) error { return nil }))
	cases := map[string]map[string]string{
		"with parent": {TraceparentHeader: inParent, TracestateHeader: "a=b"},
		"new trace":   {},
		"grpc bin":    {GRPCTraceBin: base64.RawStdEncoding.EncodeToString(binOf(inTrace, inSpan, 1))},
	}
	for name, hdrs := range cases {
		t.Run(name, func(t *testing.T) {
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			ctx := context.Background()
			reset := func() {
				for k, v := range hdrs {
					ex.Req.Header.Set(k, v)
				}
				ex.Resp.Header.Del(TraceparentHeader)
			}
			reset()
			_ = h.Handle(ctx, ex)
			if n := testing.AllocsPerRun(1000, func() {
				if len(hdrs) == 0 {
					ex.Req.Header.Del(TraceparentHeader)
				}
				_ = h.Handle(ctx, ex)
			}); n != 0 {
				t.Fatalf("%v allocations per request, want 0", n)
			}
		})
	}
}

func BenchmarkHandle(b *testing.B) {
	h := build(b, nil, filters.HandlerFunc(func(context.Context, *filters.Exchange) error { return nil }))
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Req.Header.Set(TraceparentHeader, inParent)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = h.Handle(ctx, ex)
	}
}
