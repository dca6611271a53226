// Command fixedrate measures latency at a fixed request rate (open loop:
// requests are sent on schedule whether or not earlier ones answered), for
// several targets in interleaved rounds, and prints p50/p90/p99/max per
// target and the difference of each target from the first one.
//
//	fixedrate -rate 1000 -d 10s -r 3 direct=http://127.0.0.1:13000/echo \
//	    two-hop=http://127.0.0.1:20100/v1.0/invoke/app/method/echo
//
// Latency is measured from the scheduled send time, so a sender that falls
// behind shows up in the figures instead of hiding (no coordinated omission).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

type target struct {
	name, url string
	lat       []time.Duration // from the scheduled send time
	at        []time.Time     // the scheduled send time of each lat
	svc       []time.Duration // from the moment the request was handed to the client
	late      []time.Duration // how late the sender was: the sent moment minus the scheduled one
	errors    int
}

func main() {
	rate := flag.Int("rate", 1000, "requests per second")
	dur := flag.Duration("d", 10*time.Second, "duration of each run")
	rounds := flag.Int("r", 3, "interleaved rounds")
	warm := flag.Duration("warmup", 2*time.Second, "unrecorded load per target before the first round")
	paired := flag.Bool("paired", false, "run each target at the same time as the first one (each at the rate), so that both meet the same moments of the machine; the first target's figures are kept per pairing")
	idlePoll := flag.Bool("idle-poll", false, "hold a PM QoS request of 0 µs on /dev/cpu_dma_latency while measuring, so that idle CPUs poll instead of halting (root only), and print how often each idle state was entered")
	samples := flag.String("samples", "", "write every recorded request to this file: target, scheduled send time (unix µs), latency (µs)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: fixedrate [-rate N] [-d D] [-r R] name=url ...")
		os.Exit(2)
	}
	var ts []*target
	for _, a := range flag.Args() {
		name, url, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "fixedrate: %q is not name=url\n", a)
			os.Exit(2)
		}
		ts = append(ts, &target{name: name, url: url})
	}
	if *idlePoll {
		release, err := holdIdlePoll()
		if err != nil {
			fmt.Fprintln(os.Stderr, "fixedrate: -idle-poll:", err)
			os.Exit(1)
		}
		defer release()
	}
	client := &fasthttp.Client{MaxConnsPerHost: 4096, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	for _, t := range ts {
		run(client, t, *rate, *warm, false)
	}
	if *paired {
		pairedRounds(client, ts, *rate, *dur, *rounds, *samples)
		return
	}
	for r := 0; r < *rounds; r++ {
		for _, t := range ts {
			run(client, t, *rate, *dur, true)
		}
	}
	saveSamples(*samples, ts)
	fmt.Printf("fixed rate %d req/s, %v x %d rounds per target (open loop)\n", *rate, *dur, *rounds)
	var adds []added
	for _, t := range ts[1:] {
		adds = append(adds, added{t, ts[0], "over " + ts[0].name})
	}
	for _, v := range views {
		table(v, ts, adds)
	}
	for _, t := range ts {
		fmt.Printf("%s: the sender was late by p50 %.3f ms, p99 %.3f ms\n", t.name, ms(pct(t.late, 0.5)), ms(pct(t.late, 0.99)))
	}
}

// pairedRounds runs every target after the first one together with the first
// one, round after round, and prints what each adds over the first one's
// requests of the same moments. A machine whose latency moves from second to
// second (a busy host under a virtual machine) then moves both alike.
func pairedRounds(client *fasthttp.Client, ts []*target, rate int, d time.Duration, rounds int, samples string) {
	var rows []*target // each target after its own direct calls
	var adds []added
	for _, t := range ts[1:] {
		b := &target{name: ts[0].name + "/" + t.name, url: ts[0].url}
		rows = append(rows, b, t)
		adds = append(adds, added{t, b, "over " + ts[0].name + " at the same time"})
	}
	for r := 0; r < rounds; r++ {
		for _, a := range adds {
			var wg sync.WaitGroup
			for _, t := range []*target{a.base, a.t} {
				wg.Add(1)
				go func() { defer wg.Done(); run(client, t, rate, d, true) }()
			}
			wg.Wait()
		}
	}
	saveSamples(samples, rows)
	fmt.Printf("fixed rate %d req/s per target, each target at the same time as %s, %v x %d rounds (open loop)\n", rate, ts[0].name, d, rounds)
	for _, v := range views {
		table(v, rows, adds)
	}
}

// view is one way of counting a request's latency.
type view struct {
	title string
	of    func(*target) []time.Duration
}

var views = []view{
	{"latency from the scheduled send time", func(t *target) []time.Duration { return t.lat }},
	{"latency from the moment the request was sent", func(t *target) []time.Duration { return t.svc }},
}

// added is a target whose latency is compared with base's.
type added struct {
	t, base *target
	over    string
}

// table prints p50/p90/p99/max of each row's latencies as v counts them, and
// what each of adds adds over its base at p50 and p99.
func table(v view, rows []*target, adds []added) {
	fmt.Println(v.title)
	fmt.Printf("%-22s %9s %9s %9s %9s %9s %7s\n", "target", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors")
	for _, t := range rows {
		l := v.of(t)
		fmt.Printf("%-22s %9d %9.3f %9.3f %9.3f %9.3f %7d\n", t.name, len(l), ms(pct(l, 0.5)), ms(pct(l, 0.9)), ms(pct(l, 0.99)), ms(pct(l, 1)), t.errors)
	}
	for _, a := range adds {
		l, b := v.of(a.t), v.of(a.base)
		fmt.Printf("%s adds p50 %.3f ms, p99 %.3f ms %s\n", a.t.name, ms(pct(l, 0.5)-pct(b, 0.5)), ms(pct(l, 0.99)-pct(b, 0.99)), a.over)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(l []time.Duration, p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func run(client *fasthttp.Client, t *target, rate int, d time.Duration, record bool) {
	n := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(t.url)
			sent := time.Now()
			err := client.Do(req, resp)
			done := time.Now()
			lat := done.Sub(at)
			if !record {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil || resp.StatusCode() != 200 {
				t.errors++
				return
			}
			t.lat = append(t.lat, lat)
			t.at = append(t.at, at)
			t.svc = append(t.svc, done.Sub(sent))
			t.late = append(t.late, sent.Sub(at))
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
}

// saveSamples writes one line per recorded request to path (if set), for
// finding out whether slow requests come alone or in bursts that hit every
// target alike.
func saveSamples(path string, ts []*target) {
	if path == "" {
		return
	}
	if err := writeSamples(path, ts); err != nil {
		fmt.Fprintln(os.Stderr, "fixedrate:", err)
		os.Exit(1)
	}
}

func writeSamples(path string, ts []*target) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, t := range ts {
		for i, l := range t.lat {
			fmt.Fprintf(w, "%s %d %d\n", t.name, t.at[i].UnixMicro(), l.Microseconds())
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// holdIdlePoll asks the kernel (PM QoS, /dev/cpu_dma_latency) for a CPU
// wake-up latency of 0 µs until release is called: idle CPUs then poll
// instead of entering a halt state. This is what latency tuning does
// (tuned's latency-performance profile holds the same request). On a
// virtual machine a halted vCPU goes back to the host, and waking it costs
// what the host's scheduler makes it cost; release prints how often each
// idle state was entered meanwhile, so a run shows the request was honoured.
func holdIdlePoll() (release func(), err error) {
	f, err := os.OpenFile("/dev/cpu_dma_latency", os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write([]byte{0, 0, 0, 0}); err != nil { // an int32 of 0 µs
		f.Close()
		return nil, err
	}
	before := idleStates()
	return func() {
		after := idleStates()
		fmt.Print("idle-poll: PM QoS 0 µs held; idle states entered on cpu0 meanwhile:")
		for _, st := range after {
			n := st.usage
			for _, b := range before {
				if b.name == st.name {
					n -= b.usage
				}
			}
			fmt.Printf(" %s %d", st.name, n)
		}
		fmt.Println()
		f.Close()
	}, nil
}

type idleState struct {
	name  string
	usage int64
}

// idleStates reads cpu0's cpuidle states: name and times entered.
func idleStates() []idleState {
	dirs, _ := filepath.Glob("/sys/devices/system/cpu/cpu0/cpuidle/state*")
	var out []idleState
	for _, d := range dirs {
		name, err1 := os.ReadFile(filepath.Join(d, "name"))
		usage, err2 := os.ReadFile(filepath.Join(d, "usage"))
		if err1 != nil || err2 != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(usage)), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, idleState{strings.TrimSpace(string(name)), n})
	}
	return out
}
