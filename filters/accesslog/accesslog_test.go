package accesslog

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

type respond struct {
	status int
	body   string
	err    error
}

func (r respond) Handle(_ context.Context, ex *filters.Exchange) error {
	ex.Resp.SetStatusCode(r.status)
	ex.Resp.SetBodyString(r.body)
	return r.err
}

func build(t testing.TB, raw map[string]any, env filters.Env) *Filter {
	t.Helper()
	fac := factory{}
	cfg := fac.NewConfig()
	if err := config.DecodeStrict(raw, cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.(*Config).Validate(); err != nil {
		t.Fatal(err)
	}
	flt, err := fac.Build(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	return flt.(*Filter)
}

func newExchange(caller string) *filters.Exchange {
	ex := filters.AcquireExchange(true)
	ex.Protocol = filters.ProtocolHTTP
	ex.Listener = "dapr_http"
	ex.Req.Header.SetMethod("POST")
	ex.Req.SetBodyString("abc")
	ex.SetInvoke([]byte("orders"), []byte("neworder"))
	ex.CallerAppID = []byte(caller)
	ex.Req.Header.Set("traceparent", traceparent)
	return ex
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestJSON(t *testing.T) {
	denied := filters.NewError(filters.ErrCodePermissionDenied, 403, 7, `acl: denied "x"`)
	tests := []struct {
		name   string
		caller string
		next   respond
		want   map[string]any
		absent []string
	}{
		{
			name:   "ok",
			caller: "checkout",
			next:   respond{status: 201, body: "hello"},
			want: map[string]any{
				"protocol": "http", "listener": "dapr_http", "verb": "POST",
				"route": "/invoke/orders/method/neworder", "status": 201.0,
				"req_bytes": 3.0, "resp_bytes": 5.0, "caller_app_id": "checkout",
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
			},
			absent: []string{"error"},
		},
		{
			name:   "filter error",
			next:   respond{status: 200, err: denied},
			want:   map[string]any{"status": 403.0, "error": `acl: denied "x"`},
			absent: []string{"caller_app_id"},
		},
		{
			name: "plain error",
			next: respond{status: 200, err: errors.New("dial tcp: refused\n")},
			want: map[string]any{"status": 500.0, "error": "dial tcp: refused\n"},
		},
		{
			name:   "odd bytes are escaped",
			caller: "app\x01\xff\"é",
			next:   respond{status: 200},
			want:   map[string]any{"caller_app_id": "app\x01\ufffd\"é"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "access.log")
			f := build(t, map[string]any{"path": path}, filters.Env{})
			h := f.Wrap(tt.next)
			ex := newExchange(tt.caller)
			_ = h.Handle(context.Background(), ex)
			filters.ReleaseExchange(ex)
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			lines := readLines(t, path)
			if len(lines) != 1 {
				t.Fatalf("%d lines, want 1: %q", len(lines), lines)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
				t.Fatalf("line %q is not JSON: %v", lines[0], err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := got[k]; ok {
					t.Errorf("%s present: %v", k, got[k])
				}
			}
			if _, err := time.Parse(time.RFC3339Nano, got["time"].(string)); err != nil {
				t.Errorf("time: %v", err)
			}
			if d, ok := got["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("duration_ms = %v", got["duration_ms"])
			}
		})
	}
}

func TestText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	f := build(t, map[string]any{"path": path, "format": "text"}, filters.Env{})
	h := f.Wrap(respond{status: 404, body: "nope", err: errors.New("no such method")})
	ex := newExchange("check out")
	_ = h.Handle(context.Background(), ex)
	filters.ReleaseExchange(ex)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("lines: %q", lines)
	}
	fields := strings.Fields(lines[0])
	want := []string{"http", "POST", "/invoke/orders/method/neworder", "500"}
	if len(fields) < 12 || strings.Join(fields[1:5], " ") != strings.Join(want, " ") {
		t.Fatalf("line %q, want fields %v after the time", lines[0], want)
	}
	for _, w := range []string{" 3 4 listener=dapr_http", " caller=check_out ", " trace=4bf92f3577b34da6a3ce929d0e0e4736 ", ` error="no such method"`} {
		if !strings.Contains(lines[0], w) {
			t.Errorf("line %q lacks %q", lines[0], w)
		}
	}
}

func TestFlush(t *testing.T) {
	t.Run("when the buffer fills", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "access.log")
		f := build(t, map[string]any{"path": path, "buffer_size": 1000, "flush_interval": "1h"}, filters.Env{})
		defer f.Close()
		h := f.Wrap(respond{status: 200})
		const n = 21 // ~250 bytes a line: a flush every 4 or 5 lines, never after the last one
		for range n {
			ex := newExchange("checkout")
			_ = h.Handle(context.Background(), ex)
			filters.ReleaseExchange(ex)
		}
		if got := len(readLines(t, path)); got < 4 || got == n {
			t.Fatalf("%d lines on disk before close, want the full buffers only", got)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if got := len(readLines(t, path)); got != n {
			t.Fatalf("%d lines after close, want %d", got, n)
		}
	})
	t.Run("on the interval", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "access.log")
		f := build(t, map[string]any{"path": path, "flush_interval": "10ms"}, filters.Env{})
		defer f.Close()
		h := f.Wrap(respond{status: 200})
		ex := newExchange("checkout")
		_ = h.Handle(context.Background(), ex)
		filters.ReleaseExchange(ex)
		deadline := time.Now().Add(5 * time.Second)
		for len(readLines(t, path)) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the line was not flushed by the background flusher")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func TestLogger(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	f := build(t, map[string]any{"logger": true}, filters.Env{Logger: zap.New(core)})
	h := f.Wrap(respond{status: 200, body: "ok"})
	ex := newExchange("checkout")
	_ = h.Handle(context.Background(), ex)
	filters.ReleaseExchange(ex)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	entries := logs.All()
	if len(entries) != 1 {
		t.Fatalf("%d log entries", len(entries))
	}
	e := entries[0]
	m := e.ContextMap()
	if e.LoggerName != "accesslog" || m["route"] != "/invoke/orders/method/neworder" || m["status"] != int64(200) || m["caller_app_id"] != "checkout" {
		t.Fatalf("entry %s %v", e.LoggerName, m)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "defaults", cfg: Config{}},
		{name: "bad format", cfg: Config{Format: "xml"}, want: "format"},
		{name: "path and logger", cfg: Config{Path: "x", Logger: true}, want: "mutually exclusive"},
		{name: "negative buffer", cfg: Config{BufferSize: -1}, want: "buffer_size"},
		{name: "negative interval", cfg: Config{FlushInterval: -1}, want: "flush_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "accesslog: ") {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	_, err := factory{}.Build(&Config{Path: filepath.Join(t.TempDir(), "no", "such", "dir")}, filters.Env{})
	if err == nil || !strings.HasPrefix(err.Error(), "accesslog: ") {
		t.Fatalf("unopenable path: err = %v", err)
	}
}

func TestAllocs(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatText} {
		t.Run(format, func(t *testing.T) {
			f := build(t, map[string]any{"path": os.DevNull, "format": format, "buffer_size": 4096}, filters.Env{})
			defer f.Close()
			h := f.Wrap(respond{status: 200, body: "ok"})
			ex := newExchange("chéckout")
			defer filters.ReleaseExchange(ex)
			ctx := context.Background()
			_ = h.Handle(ctx, ex)
			if n := testing.AllocsPerRun(1000, func() { _ = h.Handle(ctx, ex) }); n != 0 {
				t.Fatalf("%v allocations per request, want 0", n)
			}
		})
	}
}

func BenchmarkHandle(b *testing.B) {
	for _, format := range []string{FormatJSON, FormatText} {
		b.Run(format, func(b *testing.B) {
			f := build(b, map[string]any{"path": os.DevNull, "format": format}, filters.Env{})
			defer f.Close()
			h := f.Wrap(respond{status: 200, body: "ok"})
			ex := newExchange("checkout")
			defer filters.ReleaseExchange(ex)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_ = h.Handle(ctx, ex)
			}
		})
	}
}
