package headers

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

// upstream stands in for the router: it records the request headers it saw
// and answers with a status, or fails.
type upstream struct {
	tenant string
	err    error
}

func (u *upstream) Handle(_ context.Context, ex *filters.Exchange) error {
	u.tenant = string(ex.Req.Header.Peek("x-tenant"))
	if u.err != nil {
		return u.err
	}
	ex.Resp.SetStatusCode(201)
	return nil
}

func build(t testing.TB, raw map[string]any) (*Config, filters.Filter, error) {
	t.Helper()
	f, ok := filters.Lookup(Name)
	if !ok {
		t.Fatalf("filter %q is not registered", Name)
	}
	cfg := f.NewConfig().(*Config)
	if err := config.DecodeStrict(raw, cfg); err != nil {
		return cfg, nil, err
	}
	flt, err := f.Build(cfg, filters.Env{Logger: zap.NewNop()})
	return cfg, flt, err
}

func TestSetsRequestAndResponseHeaders(t *testing.T) {
	_, flt, err := build(t, map[string]any{
		"request_headers":  map[string]any{"x-tenant": "blue"},
		"response_headers": map[string]any{"x-served-by": "custom", "x-b": "2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	up := &upstream{}
	h := flt.Wrap(up)
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Req.Header.Set("x-tenant", "red") // the configured value wins
	if err := h.Handle(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	if up.tenant != "blue" {
		t.Errorf("upstream saw x-tenant %q, want blue", up.tenant)
	}
	if got := string(ex.Resp.Header.Peek("x-served-by")); got != "custom" {
		t.Errorf("response x-served-by = %q, want custom", got)
	}
	if got := string(ex.Resp.Header.Peek("x-b")); got != "2" {
		t.Errorf("response x-b = %q, want 2", got)
	}
	if ex.Resp.StatusCode() != 201 {
		t.Errorf("status %d, want the upstream's 201", ex.Resp.StatusCode())
	}
}

func TestUpstreamErrorPassesThroughWithoutResponseHeaders(t *testing.T) {
	_, flt, err := build(t, map[string]any{"response_headers": map[string]any{"x-served-by": "custom"}})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("app down")
	h := flt.Wrap(&upstream{err: boom})
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	if err := h.Handle(context.Background(), ex); !errors.Is(err, boom) {
		t.Fatalf("error %v, want the upstream's", err)
	}
	if v := ex.Resp.Header.Peek("x-served-by"); v != nil {
		t.Errorf("x-served-by set on an error: %q", v)
	}
}

func TestBadConfig(t *testing.T) {
	for name, raw := range map[string]map[string]any{
		"empty":         {},
		"empty name":    {"request_headers": map[string]any{" ": "x"}},
		"unknown field": {"request_header": map[string]any{"a": "b"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := build(t, raw); err == nil {
				t.Fatal("accepted")
			} else if name != "unknown field" && !strings.HasPrefix(err.Error(), "headers:") {
				t.Errorf("error %q does not name the filter", err)
			}
		})
	}
}

func BenchmarkHandle(b *testing.B) {
	_, flt, err := build(b, map[string]any{
		"request_headers":  map[string]any{"x-tenant": "blue"},
		"response_headers": map[string]any{"x-served-by": "custom"},
	})
	if err != nil {
		b.Fatal(err)
	}
	h := flt.Wrap(&noop{})
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Handle(ctx, ex); err != nil {
			b.Fatal(err)
		}
	}
}

type noop struct{}

func (noop) Handle(context.Context, *filters.Exchange) error { return nil }
