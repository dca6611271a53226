package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

var ok = filters.HandlerFunc(func(context.Context, *filters.Exchange) error { return nil })

func build(t testing.TB, raw map[string]any) (*Filter, *atomic.Int64) {
	t.Helper()
	fac := factory{}
	cfg := fac.NewConfig()
	if err := config.DecodeStrict(raw, cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.(*Config).Validate(); err != nil {
		t.Fatal(err)
	}
	flt, err := fac.Build(cfg, filters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	f := flt.(*Filter)
	clock := new(atomic.Int64)
	f.now = clock.Load
	return f, clock
}

type step struct {
	advance time.Duration
	caller  string
	remote  string
	app     string
	n       int // requests in this step (default 1)
	allowed int // how many of them must pass
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name  string
		cfg   map[string]any
		steps []step
	}{
		{
			name: "burst then refill",
			cfg:  map[string]any{"requests_per_second": 10, "burst": 3},
			steps: []step{
				{n: 5, allowed: 3},
				{advance: 50 * time.Millisecond, n: 1, allowed: 0},
				{advance: 50 * time.Millisecond, n: 2, allowed: 1},
				{advance: time.Second, n: 10, allowed: 3},
			},
		},
		{
			name: "burst defaults to the rate",
			cfg:  map[string]any{"requests_per_second": 4},
			steps: []step{
				{n: 6, allowed: 4},
				{advance: 250 * time.Millisecond, n: 2, allowed: 1},
			},
		},
		{
			name: "fractional rate",
			cfg:  map[string]any{"requests_per_second": 0.5, "burst": 1},
			steps: []step{
				{n: 2, allowed: 1},
				{advance: 1500 * time.Millisecond, allowed: 0},
				{advance: 500 * time.Millisecond, allowed: 1},
			},
		},
		{
			name: "global shares one bucket between callers",
			cfg:  map[string]any{"requests_per_second": 1, "burst": 2, "per": "global"},
			steps: []step{
				{caller: "a", n: 2, allowed: 2},
				{caller: "b", n: 1, allowed: 0},
			},
		},
		{
			name: "per caller",
			cfg:  map[string]any{"requests_per_second": 1, "burst": 2, "per": "caller"},
			steps: []step{
				{caller: "a", n: 3, allowed: 2},
				{caller: "b", n: 3, allowed: 2},
				{remote: "10.0.0.1", n: 3, allowed: 2},
				{remote: "10.0.0.2", n: 1, allowed: 1},
				{caller: "a", remote: "10.0.0.2", n: 1, allowed: 0}, // the app id wins over the address
			},
		},
		{
			name: "per app id",
			cfg:  map[string]any{"requests_per_second": 1, "burst": 1, "per": "app_id"},
			steps: []step{
				{app: "orders", caller: "x", n: 2, allowed: 1},
				{app: "orders", caller: "y", n: 1, allowed: 0},
				{app: "billing", caller: "x", n: 1, allowed: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clock := build(t, tt.cfg)
			h := f.Wrap(ok)
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			for i, s := range tt.steps {
				clock.Add(int64(s.advance))
				ex.SetInvoke([]byte(s.app), []byte("m"))
				ex.CallerAppID = []byte(s.caller)
				ex.RemoteAddr = []byte(s.remote)
				n := max(s.n, 1)
				got := 0
				for range n {
					err := h.Handle(context.Background(), ex)
					if err == nil {
						got++
						continue
					}
					var fe *filters.Error
					if !errors.As(err, &fe) || !errors.Is(err, ErrLimited) || fe.Code != filters.ErrCodeTooManyRequests ||
						fe.HTTPStatus != http.StatusTooManyRequests || fe.GRPCCode != codes.ResourceExhausted {
						t.Fatalf("step %d: unexpected error %#v", i, err)
					}
				}
				if got != s.allowed {
					t.Fatalf("step %d: %d of %d allowed, want %d", i, got, n, s.allowed)
				}
			}
		})
	}
}

func TestBoundedKeys(t *testing.T) {
	f, clock := build(t, map[string]any{"requests_per_second": 1, "burst": 1, "per": "caller", "max_keys": 32})
	for i := range 1000 {
		f.Allow([]byte(fmt.Sprint("caller-", i)))
		clock.Add(int64(time.Millisecond))
	}
	total := 0
	for i := range f.shards {
		total += len(f.shards[i].m)
	}
	if limit := f.maxShard * numShards; total > limit {
		t.Fatalf("%d buckets kept, want at most %d", total, limit)
	}
}

func TestEvictPrefersIdle(t *testing.T) {
	tests := []struct {
		name string
		tats map[string]int64 // bucket -> TAT; now is 100
		want string           // the bucket evicted
	}{
		{name: "idle one", tats: map[string]int64{"busy1": 500, "idle": 50, "busy2": 300}, want: "idle"},
		{name: "closest to full", tats: map[string]int64{"a": 500, "b": 150, "c": 300}, want: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &shard{m: map[string]*bucket{}}
			for k, v := range tt.tats {
				b := new(bucket)
				b.tat.Store(v)
				s.m[k] = b
			}
			s.evict(100)
			if len(s.m) != len(tt.tats)-1 {
				t.Fatalf("%d buckets left", len(s.m))
			}
			if _, still := s.m[tt.want]; still {
				t.Fatalf("%s was kept; left: %v", tt.want, s.m)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "ok", cfg: Config{RequestsPerSecond: 1}},
		{name: "zero rate", cfg: Config{}, want: "requests_per_second"},
		{name: "negative rate", cfg: Config{RequestsPerSecond: -1}, want: "requests_per_second"},
		{name: "negative burst", cfg: Config{RequestsPerSecond: 1, Burst: -1}, want: "burst"},
		{name: "bad per", cfg: Config{RequestsPerSecond: 1, Per: "ip"}, want: `per must be`},
		{name: "negative max_keys", cfg: Config{RequestsPerSecond: 1, MaxKeys: -3}, want: "max_keys"},
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
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "ratelimit: ") {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	f, _ := build(t, map[string]any{"requests_per_second": 1, "burst": 100, "per": "caller"})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if f.Allow([]byte("same")) {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 100 {
		t.Fatalf("%d allowed with a frozen clock, want exactly the burst (100)", got)
	}
}

func TestAllocs(t *testing.T) {
	for _, per := range []string{PerGlobal, PerCaller, PerAppID} {
		t.Run(per, func(t *testing.T) {
			f, _ := build(t, map[string]any{"requests_per_second": 1e9, "burst": 1 << 20, "per": per})
			h := f.Wrap(ok)
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			ex.SetInvoke([]byte("orders"), []byte("neworder"))
			ex.CallerAppID = []byte("checkout")
			ctx := context.Background()
			_ = h.Handle(ctx, ex) // creates the bucket
			if n := testing.AllocsPerRun(1000, func() {
				if err := h.Handle(ctx, ex); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Fatalf("%v allocations per request, want 0", n)
			}
		})
	}
}

func BenchmarkHandle(b *testing.B) {
	for _, per := range []string{PerGlobal, PerCaller} {
		b.Run(per, func(b *testing.B) {
			f, _ := build(b, map[string]any{"requests_per_second": 1e9, "burst": 1 << 30, "per": per})
			h := f.Wrap(ok)
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			ex.SetInvoke([]byte("orders"), []byte("neworder"))
			ex.CallerAppID = []byte("checkout")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_ = h.Handle(ctx, ex)
			}
		})
	}
}
