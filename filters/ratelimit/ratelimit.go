// Package ratelimit is the filter that limits the request rate with token
// buckets: one for the listener, or one per caller or per invoked app id.
package ratelimit

import (
	"context"
	"errors"
	"hash/maphash"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/filters"
)

// ErrLimited is the cause of the error returned for a refused request.
var ErrLimited = errors.New("ratelimit: too many requests")

// errLimited is what the listener answers: 429 ERR_TOO_MANY_REQUESTS over
// HTTP, ResourceExhausted over gRPC. Allocated once.
var errLimited = &filters.Error{
	Code:       filters.ErrCodeTooManyRequests,
	HTTPStatus: http.StatusTooManyRequests,
	GRPCCode:   codes.ResourceExhausted,
	Message:    "ratelimit: too many requests",
	Err:        ErrLimited,
}

// bucket is a token bucket kept as the generic cell rate algorithm: one
// atomic "theoretical arrival time". A request is allowed when the TAT is at
// most burst intervals ahead of now; it then pushes the TAT one interval on.
// Lock-free and allocation-free.
type bucket struct {
	tat atomic.Int64 // nanoseconds on the filter's monotonic clock
}

func (b *bucket) allow(now, interval, tolerance int64) bool {
	for {
		tat := b.tat.Load()
		start := max(tat, now)
		if start-now > tolerance {
			return false
		}
		if b.tat.CompareAndSwap(tat, start+interval) {
			return true
		}
	}
}

// idle reports whether the bucket is full again, so that forgetting it
// loses nothing.
func (b *bucket) idle(now int64) bool { return b.tat.Load() <= now }

const numShards = 16

type shard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

// Filter is a built rate limiter. Its buckets live as long as the filter
// (one configuration snapshot).
type Filter struct {
	interval  int64 // nanoseconds per token
	tolerance int64 // (burst-1) * interval
	per       string
	maxShard  int // buckets per shard

	global bucket
	seed   maphash.Seed
	shards [numShards]shard

	epoch time.Time
	now   func() int64 // monotonic nanoseconds; replaced in tests
}

var _ filters.Filter = (*Filter)(nil)

// New builds the limiter described by c (which must be valid).
func New(c Config) *Filter {
	burst := c.Burst
	if burst == 0 {
		burst = int(math.Ceil(c.RequestsPerSecond))
	}
	burst = max(burst, 1)
	maxKeys := c.MaxKeys
	if maxKeys == 0 {
		maxKeys = DefaultMaxKeys
	}
	per := c.Per
	if per == "" {
		per = PerGlobal
	}
	interval := int64(math.Max(1, float64(time.Second)/c.RequestsPerSecond))
	f := &Filter{
		interval:  interval,
		tolerance: int64(burst-1) * interval,
		per:       per,
		maxShard:  max(1, (maxKeys+numShards-1)/numShards),
		seed:      maphash.MakeSeed(),
		epoch:     time.Now(),
	}
	f.now = func() int64 { return int64(time.Since(f.epoch)) }
	// Start every bucket full: the GCRA clock starts at zero, which is "now"
	// at build time.
	for i := range f.shards {
		f.shards[i].m = make(map[string]*bucket)
	}
	return f
}

// Allow takes a token from the bucket of key (ignored for per: global).
func (f *Filter) Allow(key []byte) bool {
	now := f.now()
	if f.per == PerGlobal {
		return f.global.allow(now, f.interval, f.tolerance)
	}
	return f.bucketFor(key, now).allow(now, f.interval, f.tolerance)
}

func (f *Filter) bucketFor(key []byte, now int64) *bucket {
	s := &f.shards[maphash.Bytes(f.seed, key)%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.m[string(key)]; ok {
		return b
	}
	if len(s.m) >= f.maxShard {
		s.evict(now)
	}
	b := new(bucket)
	b.tat.Store(now) // full
	s.m[string(key)] = b
	return b
}

// evict drops one bucket: among a few sampled (map order is random), an
// idle one if there is one, else the one closest to full.
func (s *shard) evict(now int64) {
	const sample = 8
	var victim string
	var best int64 = math.MaxInt64
	n := 0
	for k, b := range s.m {
		if b.idle(now) {
			delete(s.m, k)
			return
		}
		if t := b.tat.Load(); t < best {
			victim, best = k, t
		}
		if n++; n == sample {
			break
		}
	}
	delete(s.m, victim)
}

// Wrap returns the limiting handler.
func (f *Filter) Wrap(next filters.Handler) filters.Handler {
	return &handler{f: f, next: next}
}

type handler struct {
	f    *Filter
	next filters.Handler
}

func (h *handler) Handle(ctx context.Context, ex *filters.Exchange) error {
	var key []byte
	switch h.f.per {
	case PerCaller:
		key = ex.CallerAppID
		if len(key) == 0 {
			key = ex.RemoteAddr
		}
	case PerAppID:
		key = ex.AppID
	}
	if !h.f.Allow(key) {
		return errLimited
	}
	return h.next.Handle(ctx, ex)
}
