package stats

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// sample is one parsed line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseExposition checks text against the Prometheus text exposition format
// (version 0.0.4) the way Prometheus' own parser does, and returns the
// samples. It fails on: a sample whose family has no TYPE line before it, a
// family split in two, a TYPE or HELP given twice, names that are not
// metric names, label values with escapes other than \\ \" \n or with
// invalid UTF-8, values that are not floats, and histograms whose buckets
// are not cumulative or do not end in le="+Inf" equal to _count.
func parseExposition(text string) ([]sample, error) {
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, errors.New("the exposition does not end with a line feed")
	}
	types := map[string]string{}
	helps := map[string]bool{}
	closed := map[string]bool{} // families that were followed by another one
	current := ""
	var out []sample
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if text == "" {
		lines = nil
	}
	enter := func(fam string) error {
		if fam == current {
			return nil
		}
		if closed[fam] {
			return fmt.Errorf("family %s appears in two places", fam)
		}
		if current != "" {
			closed[current] = true
		}
		current = fam
		return nil
	}
	for n, line := range lines {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			kw, rest, _ := strings.Cut(rest, " ")
			name, arg, _ := strings.Cut(rest, " ")
			switch kw {
			case "HELP", "TYPE":
				if !metricName(name) {
					return nil, fail("bad metric name %q", name)
				}
				if err := enter(name); err != nil {
					return nil, fail("%v", err)
				}
				if kw == "HELP" {
					if helps[name] {
						return nil, fail("second HELP")
					}
					helps[name] = true
					continue
				}
				if _, ok := types[name]; ok {
					return nil, fail("second TYPE")
				}
				switch arg {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fail("bad type %q", arg)
				}
				types[name] = arg
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fail("%v", err)
		}
		fam := s.name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(s.name, suf); ok && types[base] == "histogram" {
				fam = base
			}
		}
		if _, ok := types[fam]; !ok {
			return nil, fail("sample before its TYPE line")
		}
		if err := enter(fam); err != nil {
			return nil, fail("%v", err)
		}
		if types[fam] == "histogram" && s.name == fam {
			return nil, fail("histogram sample without _bucket/_sum/_count")
		}
		out = append(out, s)
	}
	return out, checkHistograms(out, types)
}

func metricName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (i > 0 && '0' <= c && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func parseSample(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' {
		i++
	}
	s.name = line[:i]
	if !metricName(s.name) {
		return s, fmt.Errorf("bad metric name %q", s.name)
	}
	if i < len(line) && line[i] == '{' {
		i++
		for {
			if i < len(line) && line[i] == '}' {
				i++
				break
			}
			j := i
			for j < len(line) && line[j] != '=' {
				j++
			}
			lname := line[i:j]
			if !metricName(lname) || strings.Contains(lname, ":") {
				return s, fmt.Errorf("bad label name %q", lname)
			}
			if j+1 >= len(line) || line[j+1] != '"' {
				return s, fmt.Errorf("label %s: value not quoted", lname)
			}
			var val strings.Builder
			k := j + 2
			for ; ; k++ {
				if k >= len(line) {
					return s, fmt.Errorf("label %s: unterminated value", lname)
				}
				c := line[k]
				if c == '"' {
					break
				}
				if c == '\\' {
					k++
					if k >= len(line) {
						return s, fmt.Errorf("label %s: unterminated escape", lname)
					}
					switch line[k] {
					case '\\':
						val.WriteByte('\\')
					case '"':
						val.WriteByte('"')
					case 'n':
						val.WriteByte('\n')
					default:
						return s, fmt.Errorf("label %s: invalid escape sequence \\%c", lname, line[k])
					}
					continue
				}
				val.WriteByte(c)
			}
			if !utf8.ValidString(val.String()) {
				return s, fmt.Errorf("label %s: value is not valid UTF-8", lname)
			}
			if _, dup := s.labels[lname]; dup {
				return s, fmt.Errorf("label %s given twice", lname)
			}
			s.labels[lname] = val.String()
			i = k + 1
			if i < len(line) && line[i] == ',' {
				i++
			}
		}
	}
	if i >= len(line) || line[i] != ' ' {
		return s, errors.New("no space before the value")
	}
	fields := strings.Fields(line[i+1:])
	if len(fields) == 0 || len(fields) > 2 {
		return s, errors.New("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("bad value: %v", err)
	}
	s.value = v
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("bad timestamp: %v", err)
		}
	}
	return s, nil
}

// sampleSeries identifies a series without the le label.
func sampleSeries(s sample) string {
	keys := make([]string, 0, len(s.labels))
	for k := range s.labels {
		if k != "le" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + strconv.Quote(s.labels[k]) + ",")
	}
	return b.String()
}

func checkHistograms(ss []sample, types map[string]string) error {
	type hist struct {
		les    []float64
		counts []float64
		count  float64
		hasCnt bool
	}
	hs := map[string]*hist{}
	get := func(k string) *hist {
		if hs[k] == nil {
			hs[k] = &hist{}
		}
		return hs[k]
	}
	for _, s := range ss {
		if base, ok := strings.CutSuffix(s.name, "_bucket"); ok && types[base] == "histogram" {
			le, ok := s.labels["le"]
			if !ok {
				return fmt.Errorf("%s: bucket without le", s.name)
			}
			ub, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return fmt.Errorf("%s: bad le %q", s.name, le)
			}
			h := get(base + "|" + sampleSeries(s))
			h.les = append(h.les, ub)
			h.counts = append(h.counts, s.value)
		}
		if base, ok := strings.CutSuffix(s.name, "_count"); ok && types[base] == "histogram" {
			h := get(base + "|" + sampleSeries(s))
			h.count, h.hasCnt = s.value, true
		}
	}
	for k, h := range hs {
		if len(h.les) == 0 || !math.IsInf(h.les[len(h.les)-1], 1) {
			return fmt.Errorf("histogram %s: the last bucket is not le=\"+Inf\"", k)
		}
		for i := 1; i < len(h.les); i++ {
			if h.les[i] <= h.les[i-1] {
				return fmt.Errorf("histogram %s: buckets not ascending", k)
			}
			if h.counts[i] < h.counts[i-1] {
				return fmt.Errorf("histogram %s: buckets not cumulative", k)
			}
		}
		if !h.hasCnt || h.count != h.counts[len(h.counts)-1] {
			return fmt.Errorf("histogram %s: _count %v != +Inf bucket %v", k, h.count, h.counts[len(h.counts)-1])
		}
	}
	return nil
}

// find returns the value of the sample with that name and exactly those
// labels (pairs).
func find(t *testing.T, ss []sample, name string, kv ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		want[kv[i]] = kv[i+1]
	}
next:
	for _, s := range ss {
		if s.name != name || len(s.labels) != len(want) {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		return s.value
	}
	t.Fatalf("no sample %s%v", name, want)
	return 0
}

func scrape(t *testing.T, r *Registry) (string, []sample) {
	t.Helper()
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	ss, err := parseExposition(b.String())
	if err != nil {
		t.Fatalf("invalid exposition: %v\n%s", err, b.String())
	}
	return b.String(), ss
}

// TestParserRejectsBadText keeps the hand-written checker honest: each of
// these is invalid exposition and must be refused.
func TestParserRejectsBadText(t *testing.T) {
	cases := map[string]string{
		"no TYPE":               "x 1\n",
		"split family":          "# TYPE a counter\na 1\n# TYPE b counter\nb 1\na 2\n",
		"tab escape":            "# TYPE a counter\na{l=\"x\\ty\"} 1\n",
		"invalid utf-8":         "# TYPE a counter\na{l=\"\xff\"} 1\n",
		"bad value":             "# TYPE a counter\na one\n",
		"bad name":              "# TYPE 1a counter\n1a 1\n",
		"not cumulative":        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		"no +Inf bucket":        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
		"count differs":         "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
		"no final line feed":    "# TYPE a counter\na 1",
		"unterminated value":    "# TYPE a counter\na{l=\"x} 1\n",
		"two TYPE lines":        "# TYPE a counter\n# TYPE a counter\na 1\n",
		"bare histogram sample": "# TYPE h histogram\nh 1\n",
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := parseExposition(text); err == nil {
				t.Fatalf("accepted %q", text)
			}
		})
	}
	if _, err := parseExposition("# HELP a A.\n# TYPE a counter\na{l=\"q\\\"b\\\\s\\n\"} 1\n"); err != nil {
		t.Fatalf("refused valid text: %v", err)
	}
}

func TestCounterAndGauge(t *testing.T) {
	r := NewRegistry("dapr_")
	c := r.Counter("requests_total", "Requests.", "app_id", "status").With("orders", "200")
	c.Inc()
	c.Add(41)
	if c.Value() != 42 {
		t.Fatalf("counter %d, want 42", c.Value())
	}
	g := r.Gauge("inflight", "In flight.").With()
	g.Add(5)
	g.Add(-7)
	if g.Value() != -2 {
		t.Fatalf("gauge %d, want -2", g.Value())
	}
	g.Set(9)
	if g.Value() != 9 {
		t.Fatalf("gauge %d after Set(9)", g.Value())
	}
	text, ss := scrape(t, r)
	if v := find(t, ss, "dapr_requests_total", "app_id", "orders", "status", "200"); v != 42 {
		t.Fatalf("exposed counter %v\n%s", v, text)
	}
	if v := find(t, ss, "dapr_inflight"); v != 9 {
		t.Fatalf("exposed gauge %v\n%s", v, text)
	}
	for _, want := range []string{
		"# HELP dapr_requests_total Requests.\n# TYPE dapr_requests_total counter\n",
		"# HELP dapr_inflight In flight.\n# TYPE dapr_inflight gauge\n",
	} {
		if !strings.Contains(text, want) {
			t.Fatalf("missing %q in\n%s", want, text)
		}
	}
}

func TestWithReturnsTheSameSeries(t *testing.T) {
	r := NewRegistry("")
	v := r.Counter("c", "C.", "a")
	if v.With("x") != v.With("x") {
		t.Fatal("With gave two counters for the same label values")
	}
	if v.With("x") == v.With("y") {
		t.Fatal("With gave one counter for different label values")
	}
	// Registering the same family again (another chain built from the same
	// snapshot) finds the existing one and its series.
	v.With("x").Inc()
	if got := r.Counter("c", "C.", "a").With("x").Value(); got != 1 {
		t.Fatalf("re-registered family lost its series: %d", got)
	}
	// Label values are joined internally; values that contain the joiner of
	// another split must still be different series.
	w := r.Counter("pair", "P.", "a", "b")
	if w.With("x", "y") == w.With("x,y", "") {
		t.Fatal("distinct label values share a series")
	}
	if w.With("a\xffb", "c") == w.With("a", "b\xffc") {
		t.Fatal("label values containing the internal separator byte collide")
	}
	h := r.Histogram("h", "H.", []float64{1}, "a")
	if h.With("x") != h.With("x") {
		t.Fatal("With gave two histograms for the same label values")
	}
	g := r.Gauge("g", "G.", "a")
	if g.With("x") != g.With("x") {
		t.Fatal("With gave two gauges for the same label values")
	}
}

func TestShapeMismatchPanics(t *testing.T) {
	cases := []struct {
		name string
		fn   func(r *Registry)
	}{
		{"counter then gauge", func(r *Registry) { r.Counter("m", "M.", "a"); r.Gauge("m", "M.", "a") }},
		{"other labels", func(r *Registry) { r.Counter("m", "M.", "a"); r.Counter("m", "M.", "b") }},
		{"more labels", func(r *Registry) { r.Counter("m", "M.", "a"); r.Counter("m", "M.", "a", "b") }},
		{"counter then histogram", func(r *Registry) { r.Counter("m", "M.", "a"); r.Histogram("m", "M.", SizeBuckets, "a") }},
		{"too few label values", func(r *Registry) { r.Counter("m", "M.", "a", "b").With("x") }},
		{"too many label values", func(r *Registry) { r.Gauge("m", "M.").With("x") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tc.fn(NewRegistry("p_"))
		})
	}
	// The same shape registered twice is fine (it must not panic).
	r := NewRegistry("a_")
	r.Histogram("m", "M.", SizeBuckets, "a")
	r.Histogram("m", "M.", SizeBuckets, "a")
}

func TestHistogramBuckets(t *testing.T) {
	r := NewRegistry("")
	h := r.Histogram("latency_ms", "Latency.", []float64{1, 5, 10}, "app_id").With("orders")
	// le is inclusive: 1 falls in le="1", 5 in le="5"; 11 only in +Inf.
	for _, v := range []float64{0.5, 1, 3, 5, 10, 11, 1000} {
		h.Observe(v)
	}
	if h.Count() != 7 {
		t.Fatalf("count %d", h.Count())
	}
	text, ss := scrape(t, r)
	want := []struct {
		le string
		n  float64
	}{{"1", 2}, {"5", 4}, {"10", 5}, {"+Inf", 7}}
	for _, w := range want {
		if got := find(t, ss, "latency_ms_bucket", "app_id", "orders", "le", w.le); got != w.n {
			t.Fatalf("bucket le=%s: %v, want %v\n%s", w.le, got, w.n, text)
		}
	}
	if got := find(t, ss, "latency_ms_sum", "app_id", "orders"); got != 1030.5 {
		t.Fatalf("sum %v\n%s", got, text)
	}
	if got := find(t, ss, "latency_ms_count", "app_id", "orders"); got != 7 {
		t.Fatalf("count %v\n%s", got, text)
	}
}

func TestObserveSinceIsMilliseconds(t *testing.T) {
	r := NewRegistry("")
	h := r.Histogram("l", "L.", LatencyBucketsMS).With()
	h.ObserveSince(time.Now().Add(-1500 * time.Millisecond))
	_, ss := scrape(t, r)
	sum := find(t, ss, "l_sum")
	if sum < 1500 || sum > 60_000 {
		t.Fatalf("1.5 s ago recorded as %v ms", sum)
	}
	if find(t, ss, "l_bucket", "le", "1000") != 0 || find(t, ss, "l_bucket", "le", "2000") != 1 {
		t.Fatal("1500 ms landed in the wrong bucket")
	}
}

// TestLabelValuesAreEscaped: label values come from requests (app ids,
// topics), so any string must produce a parseable exposition, and the
// parsed value must be the original one (invalid UTF-8 replaced).
func TestLabelValuesAreEscaped(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "orders", "orders"},
		{"quote", `a"b`, `a"b`},
		{"backslash", `c:\path`, `c:\path`},
		{"newline", "l1\nl2", "l1\nl2"},
		{"tab", "a\tb", "a\tb"},
		{"control", "bell\a", "bell\a"},
		{"unicode", "ünïcødé-日本", "ünïcødé-日本"},
		{"non-printable unicode", "nb\u00a0sp", "nb\u00a0sp"},
		{"invalid utf-8", "bad\xffbyte", "bad\uFFFDbyte"},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry("")
			r.Counter("c", "C.", "topic").With(tc.in).Inc()
			r.Histogram("h", "H.", []float64{1}, "topic").With(tc.in).Observe(2)
			text, ss := scrape(t, r)
			if got := find(t, ss, "c", "topic", tc.want); got != 1 {
				t.Fatalf("value %v\n%s", got, text)
			}
			if got := find(t, ss, "h_bucket", "topic", tc.want, "le", "+Inf"); got != 1 {
				t.Fatalf("bucket %v\n%s", got, text)
			}
		})
	}
}

func TestExpositionOrderAndEmptyFamilies(t *testing.T) {
	r := NewRegistry("dapr_")
	r.Counter("zeta", "Z.", "a").With("2").Inc()
	r.Counter("zeta", "Z.", "a").With("1").Add(2)
	r.Gauge("alpha", "A.") // no series yet: HELP and TYPE only
	r.Histogram("mid", "M.", []float64{1}).With().Observe(0.5)
	text, ss := scrape(t, r)
	ia, im, iz := strings.Index(text, "# TYPE dapr_alpha"), strings.Index(text, "# TYPE dapr_mid"), strings.Index(text, "# TYPE dapr_zeta")
	if ia < 0 || im < 0 || iz < 0 || !(ia < im && im < iz) {
		t.Fatalf("families not sorted by name:\n%s", text)
	}
	// Series keep their creation order, so scrapes are stable.
	if strings.Index(text, `dapr_zeta{a="2"}`) > strings.Index(text, `dapr_zeta{a="1"}`) {
		t.Fatalf("series not in creation order:\n%s", text)
	}
	if len(ss) != 2+4 {
		t.Fatalf("%d samples, want 6:\n%s", len(ss), text)
	}
	var empty bytes.Buffer
	if err := NewRegistry("x_").WritePrometheus(&empty); err != nil || empty.Len() != 0 {
		t.Fatalf("empty registry wrote %q, %v", empty.String(), err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWritePrometheusReturnsWriteError(t *testing.T) {
	r := NewRegistry("")
	r.Counter("c", "C.").With().Inc()
	if err := r.WritePrometheus(failingWriter{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v", err)
	}
}

// TestConcurrentUpdates: no update is lost while many goroutines count,
// observe, create series and scrape at once (run with -race).
func TestConcurrentUpdates(t *testing.T) {
	r := NewRegistry("")
	c := r.Counter("c", "C.").With()
	h := r.Histogram("h", "H.", []float64{10, 100}).With()
	g := r.Gauge("g", "G.").With()
	const workers, n = 8, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			per := r.Counter("per", "P.", "w").With(strconv.Itoa(w))
			for i := range n {
				c.Inc()
				per.Inc()
				g.Add(1)
				h.Observe(float64(i % 200)) // integers: the float sum is exact
				if i%500 == 0 {
					_ = r.WritePrometheus(&bytes.Buffer{})
				}
			}
		}()
	}
	wg.Wait()
	var wantSum float64
	for i := range n {
		wantSum += float64(i % 200)
	}
	wantSum *= workers
	_, ss := scrape(t, r)
	if c.Value() != workers*n || g.Value() != workers*n || h.Count() != workers*n {
		t.Fatalf("counter %d gauge %d histogram %d, want %d", c.Value(), g.Value(), h.Count(), workers*n)
	}
	if got := find(t, ss, "h_sum"); got != wantSum {
		t.Fatalf("histogram sum %v, want %v (lost updates)", got, wantSum)
	}
	if got := find(t, ss, "h_bucket", "le", "10"); got != workers*n/200*11 {
		t.Fatalf("le=10 bucket %v", got)
	}
	for w := range workers {
		if got := find(t, ss, "per", "w", strconv.Itoa(w)); got != n {
			t.Fatalf("per{w=%d} %v", w, got)
		}
	}
}

// TestHotPathDoesNotAllocate: what runs per request is atomic adds only.
func TestHotPathDoesNotAllocate(t *testing.T) {
	r := NewRegistry("")
	c := r.Counter("c", "C.", "a").With("x")
	g := r.Gauge("g", "G.").With()
	h := r.Histogram("h", "H.", LatencyBucketsMS, "a").With("x")
	start := time.Now()
	cases := map[string]func(){
		"Counter.Inc":            c.Inc,
		"Counter.Add":            func() { c.Add(3) },
		"Gauge.Add":              func() { g.Add(-1) },
		"Gauge.Set":              func() { g.Set(7) },
		"Histogram.Observe":      func() { h.Observe(42.5) },
		"Histogram.ObserveSince": func() { h.ObserveSince(start) },
	}
	for name, fn := range cases {
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Errorf("%s: %v allocs per call, want 0", name, n)
		}
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := NewRegistry("").Counter("c", "C.", "a").With("x")
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}

func BenchmarkCounterIncParallel(b *testing.B) {
	c := NewRegistry("").Counter("c", "C.", "a").With("x")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Inc()
		}
	})
}

func BenchmarkGaugeAdd(b *testing.B) {
	g := NewRegistry("").Gauge("g", "G.").With()
	b.ReportAllocs()
	for b.Loop() {
		g.Add(1)
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := NewRegistry("").Histogram("h", "H.", LatencyBucketsMS, "a").With("x")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.Observe(float64(i % 3000))
		i++
	}
}

func BenchmarkHistogramObserveParallel(b *testing.B) {
	h := NewRegistry("").Histogram("h", "H.", LatencyBucketsMS, "a").With("x")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		v := 0.0
		for pb.Next() {
			h.Observe(v)
			v += 7
		}
	})
}

func BenchmarkWritePrometheus(b *testing.B) {
	r := NewRegistry("dapr_")
	for i := range 20 {
		r.Counter("requests_total", "R.", "app_id", "status").With("app"+strconv.Itoa(i), "200").Add(uint64(i))
		r.Histogram("latency_ms", "L.", LatencyBucketsMS, "app_id").With("app" + strconv.Itoa(i)).Observe(float64(i))
	}
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		_ = r.WritePrometheus(&buf)
	}
}
