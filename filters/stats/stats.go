// Package stats is a small allocation-free metrics library with Prometheus
// text exposition. Label values are resolved when a chain or cluster is
// built (With), so the per-request path only does atomic adds.
package stats

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Registry holds metric families and writes them in Prometheus text format.
type Registry struct {
	prefix string
	mu     sync.Mutex
	fams   map[string]*family
}

// NewRegistry returns a registry whose metric names all start with prefix
// (for example "dapr_").
func NewRegistry(prefix string) *Registry {
	return &Registry{prefix: prefix, fams: map[string]*family{}}
}

type kind uint8

const (
	kindCounter kind = iota
	kindGauge
	kindHistogram
)

type family struct {
	name    string
	help    string
	kind    kind
	labels  []string
	buckets []float64
	mu      sync.Mutex
	series  map[string]any // joined label values -> *Counter | *Gauge | *Histogram
	order   []string
}

func (r *Registry) family(name, help string, k kind, labels []string, buckets []float64) *family {
	full := r.prefix + name
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.fams[full]; ok {
		if f.kind != k || strings.Join(f.labels, ",") != strings.Join(labels, ",") {
			panic(fmt.Sprintf("stats: metric %s registered twice with different shapes", full))
		}
		return f
	}
	f := &family{name: full, help: help, kind: k, labels: labels, buckets: buckets, series: map[string]any{}}
	r.fams[full] = f
	return f
}

func (f *family) get(values []string, mk func() any) any {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("stats: %s wants %d label values, got %d", f.name, len(f.labels), len(values)))
	}
	key := seriesKey(values)
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.series[key]; ok {
		return s
	}
	s := mk()
	f.series[key] = s
	f.order = append(f.order, key)
	return s
}

// seriesKey joins label values with 0xff, a byte valid UTF-8 never holds:
// values are made valid UTF-8 first (Prometheus rejects anything else), so
// no two different value lists share a key and the key splits back into
// the values.
func seriesKey(values []string) string {
	var b strings.Builder
	for i, v := range values {
		if i > 0 {
			b.WriteByte(0xff)
		}
		b.WriteString(strings.ToValidUTF8(v, "\uFFFD"))
	}
	return b.String()
}

// CounterVec is a counter family with labels.
type CounterVec struct{ f *family }

// Counter registers (or finds) a counter family.
func (r *Registry) Counter(name, help string, labels ...string) CounterVec {
	return CounterVec{r.family(name, help, kindCounter, labels, nil)}
}

// With returns the counter for these label values. Call it at build time.
func (v CounterVec) With(values ...string) *Counter {
	return v.f.get(values, func() any { return new(Counter) }).(*Counter)
}

// GaugeVec is a gauge family with labels.
type GaugeVec struct{ f *family }

// Gauge registers (or finds) a gauge family.
func (r *Registry) Gauge(name, help string, labels ...string) GaugeVec {
	return GaugeVec{r.family(name, help, kindGauge, labels, nil)}
}

// With returns the gauge for these label values.
func (v GaugeVec) With(values ...string) *Gauge {
	return v.f.get(values, func() any { return new(Gauge) }).(*Gauge)
}

// HistogramVec is a histogram family with labels.
type HistogramVec struct{ f *family }

// LatencyBucketsMS are daprd's latency buckets, in milliseconds.
var LatencyBucketsMS = []float64{1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300, 400, 500, 650, 800, 1000, 2000, 5000, 10000, 20000, 50000, 100000}

// SizeBuckets are byte-size buckets.
var SizeBuckets = []float64{1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}

// Histogram registers (or finds) a histogram family with the given upper bounds.
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) HistogramVec {
	return HistogramVec{r.family(name, help, kindHistogram, labels, buckets)}
}

// With returns the histogram for these label values.
func (v HistogramVec) With(values ...string) *Histogram {
	return v.f.get(values, func() any {
		return &Histogram{bounds: v.f.buckets, counts: make([]atomic.Uint64, len(v.f.buckets)+1)}
	}).(*Histogram)
}

// Counter is a monotonically increasing count.
type Counter struct{ n atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.n.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.n.Add(n) }

// Value returns the count.
func (c *Counter) Value() uint64 { return c.n.Load() }

// Gauge is a value that goes up and down.
type Gauge struct{ n atomic.Int64 }

// Add adds d (negative to subtract).
func (g *Gauge) Add(d int64) { g.n.Add(d) }

// Set sets the value.
func (g *Gauge) Set(v int64) { g.n.Store(v) }

// Value returns the value.
func (g *Gauge) Value() int64 { return g.n.Load() }

// Histogram counts observations into buckets.
type Histogram struct {
	bounds []float64
	counts []atomic.Uint64 // len(bounds)+1, the last is +Inf
	sum    atomic.Uint64   // float64 bits
	count  atomic.Uint64
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.counts[i].Add(1)
	h.count.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// ObserveSince records the milliseconds since start.
func (h *Histogram) ObserveSince(start time.Time) {
	h.Observe(float64(time.Since(start).Nanoseconds()) / 1e6)
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// WritePrometheus writes every family in the Prometheus text format.
func (r *Registry) WritePrometheus(w io.Writer) error {
	r.mu.Lock()
	names := make([]string, 0, len(r.fams))
	for n := range r.fams {
		names = append(names, n)
	}
	fams := make([]*family, 0, len(names))
	sort.Strings(names)
	for _, n := range names {
		fams = append(fams, r.fams[n])
	}
	r.mu.Unlock()

	var b []byte
	for _, f := range fams {
		f.mu.Lock()
		keys := append([]string(nil), f.order...)
		series := make([]any, len(keys))
		for i, k := range keys {
			series[i] = f.series[k]
		}
		f.mu.Unlock()
		typ := [...]string{"counter", "gauge", "histogram"}[f.kind]
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.help...)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, typ...)
		b = append(b, '\n')
		for i, k := range keys {
			var vals []string
			if len(f.labels) > 0 {
				vals = strings.Split(k, "\xff")
			}
			switch s := series[i].(type) {
			case *Counter:
				b = appendSample(b, f.name, f.labels, vals, "", "", float64(s.Value()))
			case *Gauge:
				b = appendSample(b, f.name, f.labels, vals, "", "", float64(s.Value()))
			case *Histogram:
				var cum uint64
				for j, ub := range s.bounds {
					cum += s.counts[j].Load()
					b = appendSample(b, f.name+"_bucket", f.labels, vals, "le", strconv.FormatFloat(ub, 'g', -1, 64), float64(cum))
				}
				cum += s.counts[len(s.bounds)].Load()
				b = appendSample(b, f.name+"_bucket", f.labels, vals, "le", "+Inf", float64(cum))
				b = appendSample(b, f.name+"_sum", f.labels, vals, "", "", math.Float64frombits(s.sum.Load()))
				b = appendSample(b, f.name+"_count", f.labels, vals, "", "", float64(cum))
			}
		}
	}
	_, err := w.Write(b)
	return err
}

func appendSample(b []byte, name string, labels, vals []string, extraK, extraV string, v float64) []byte {
	b = append(b, name...)
	if len(labels) > 0 || extraK != "" {
		b = append(b, '{')
		for i, l := range labels {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, l...)
			b = append(b, '=')
			b = appendLabelValue(b, vals[i])
		}
		if extraK != "" {
			if len(labels) > 0 {
				b = append(b, ',')
			}
			b = append(b, extraK...)
			b = append(b, '=')
			b = appendLabelValue(b, extraV)
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = strconv.AppendFloat(b, v, 'g', -1, 64)
	return append(b, '\n')
}

// appendLabelValue quotes v as the text format wants: only backslash,
// double quote and line feed are escaped (Go's quoting would write escapes
// such as \t or \u00a0 that Prometheus refuses, failing the whole scrape).
func appendLabelValue(b []byte, v string) []byte {
	b = append(b, '"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
