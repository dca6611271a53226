// Command pubsubbench measures switchyard's pub/sub path in one run, on
// 127.0.0.1, with real processes:
//
//  1. publish throughput and latency through the sidecar's HTTP API to the
//     in-memory broker and to Redis, beside go-redis doing XADD directly at
//     the same concurrency (ratio printed; target >= 0.5);
//  2. end-to-end publish -> app delivery latency (p50/p99) with Redis and
//     NATS JetStream, to the Go SDK subscriber (internal/testapps/sdksub).
//
// Run from the repository root: go run ./bench/pubsubbench [-c 32] [-d 5s]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
)

var (
	conc     = flag.Int("c", 32, "concurrent publishers")
	dur      = flag.Duration("d", 5*time.Second, "duration of each throughput run")
	size     = flag.Int("size", 256, "payload bytes")
	e2eN     = flag.Int("e2e-n", 2000, "messages for the end-to-end latency runs")
	e2eRate  = flag.Int("e2e-rate", 500, "messages per second for the end-to-end latency runs")
	keepLogs = flag.Bool("v", false, "print process output on exit")
)

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *os.File
}

var procs []*proc

func start(name string, args ...string) *proc {
	f, _ := os.CreateTemp("", "pubsubbench-"+filepath.Base(name)+"-*.log")
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		fail("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: c, out: f}
	procs = append(procs, p)
	return p
}

func stopAll() {
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
		if *keepLogs {
			b, _ := os.ReadFile(p.out.Name())
			fmt.Fprintf(os.Stderr, "--- %s\n%s", p.name, b)
		}
		_ = os.Remove(p.out.Name())
	}
	procs = nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pubsubbench: "+format+"\n", args...)
	stopAll()
	os.Exit(1)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitTCP(addr string) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	fail("%s never accepted", addr)
}

func waitHTTP(url string, want int) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == want {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	fail("%s never answered %d", url, want)
}

type sidecarPorts struct{ http, grpc int }

func startSidecar(bin, appID string, appPort int, resources string) sidecarPorts {
	p := sidecarPorts{http: freePort(), grpc: freePort()}
	args := []string{"--app-id", appID, "--dapr-http-port", strconv.Itoa(p.http), "--dapr-grpc-port", strconv.Itoa(p.grpc),
		"--metrics-port", strconv.Itoa(freePort()), "--admin-port", strconv.Itoa(freePort()), "--log-level", "warn"}
	if appPort != 0 {
		args = append(args, "--app-port", strconv.Itoa(appPort))
	}
	if resources != "" {
		args = append(args, "--resources-path", resources)
	}
	start(bin, args...)
	waitHTTP("http://127.0.0.1:"+strconv.Itoa(p.http)+"/v1.0/healthz", 204)
	return p
}

func component(typ string, md map[string]string) string {
	dir, _ := os.MkdirTemp("", "pubsubbench-res-")
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: %s\n  version: v1\n  metadata:\n", typ)
	for k, v := range md {
		fmt.Fprintf(&b, "    - name: %s\n      value: %q\n", k, v)
	}
	_ = os.WriteFile(filepath.Join(dir, "pubsub.yaml"), []byte(b.String()), 0o644)
	return dir
}

type result struct {
	n        int64
	errs     int64
	elapsed  time.Duration
	lat      []time.Duration
	p50, p99 time.Duration
}

func (r *result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r *result) finish() {
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	if len(r.lat) > 0 {
		r.p50 = r.lat[len(r.lat)/2]
		r.p99 = r.lat[len(r.lat)*99/100]
	}
}

// run calls op from c goroutines for d and collects latencies.
func run(c int, d time.Duration, op func() error) *result {
	var n, errs atomic.Int64
	var mu sync.Mutex
	res := &result{}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	begin := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := op(); err != nil {
					errs.Add(1)
					continue
				}
				lat = append(lat, time.Since(t0))
				n.Add(1)
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed, res.n, res.errs = time.Since(begin), n.Load(), errs.Load()
	res.finish()
	return res
}

func httpPublisher(port int, payload []byte) func() error {
	client := &fasthttp.HostClient{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxConns: 4 * *conc}
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/v1.0/publish/pubsub/bench"
	return func() error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(payload)
		if err := client.Do(req, resp); err != nil {
			return err
		}
		if resp.StatusCode() != 204 {
			return fmt.Errorf("status %d", resp.StatusCode())
		}
		return nil
	}
}

func line(name string, r *result) {
	fmt.Printf("%-34s %9.0f msg/s   p50 %7.3f ms   p99 %7.3f ms   errors %d\n", name, r.rate(),
		float64(r.p50.Microseconds())/1000, float64(r.p99.Microseconds())/1000, r.errs)
}

func main() {
	flag.Parse()
	defer stopAll()
	tmp, _ := os.MkdirTemp("", "pubsubbench-bin-")
	defer os.RemoveAll(tmp)
	sy, sub := filepath.Join(tmp, "switchyard"), filepath.Join(tmp, "sdksub")
	for out, pkg := range map[string]string{sy: "./cmd/switchyard", sub: "./internal/testapps/sdksub"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fail("go build %s: %v\n%s", pkg, err, b)
		}
	}
	payload := []byte(`{"data":"` + strings.Repeat("x", max(*size-11, 1)) + `"}`)
	fmt.Printf("pubsubbench: concurrency %d, %s per run, payload %d bytes, GOMAXPROCS of the sidecar: default\n\n", *conc, *dur, len(payload))

	// Redis (no persistence: the broker's own speed, not the disk's).
	rport := freePort()
	raddr := "127.0.0.1:" + strconv.Itoa(rport)
	rdir, _ := os.MkdirTemp("", "pubsubbench-redis-")
	defer os.RemoveAll(rdir)
	start("redis-server", "--port", strconv.Itoa(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", rdir)
	waitTCP(raddr)

	// 1. Throughput.
	mem := startSidecar(sy, "pub-mem", 0, "")
	line("HTTP publish -> in-memory", run(*conc, *dur, httpPublisher(mem.http, payload)))

	redisRes := component("pubsub.redis", map[string]string{"redisHost": raddr})
	pr := startSidecar(sy, "pub-redis", 0, redisRes)
	viaSY := run(*conc, *dur, httpPublisher(pr.http, payload))
	line("HTTP publish -> switchyard -> Redis", viaSY)

	rc := goredis.NewClient(&goredis.Options{Addr: raddr, PoolSize: 4 * *conc})
	defer rc.Close()
	ctx := context.Background()
	direct := run(*conc, *dur, func() error {
		return rc.XAdd(ctx, &goredis.XAddArgs{Stream: "bench-direct", Values: []any{"data", payload}}).Err()
	})
	line("go-redis XADD direct", direct)
	fmt.Printf("ratio switchyard/direct (Redis): %.2f (target >= 0.5)\n\n", viaSY.rate()/direct.rate())

	// 2. End to end: publish -> delivery latency.
	nport := freePort()
	ndir, _ := os.MkdirTemp("", "pubsubbench-nats-")
	defer os.RemoveAll(ndir)
	start("nats-server", "-a", "127.0.0.1", "-p", strconv.Itoa(nport), "-js", "-sd", ndir)
	waitTCP("127.0.0.1:" + strconv.Itoa(nport))
	for _, b := range []struct {
		name, typ string
		md        map[string]string
	}{
		{"Redis", "pubsub.redis", map[string]string{"redisHost": raddr}},
		{"NATS JetStream", "pubsub.jetstream", map[string]string{"natsURL": "nats://127.0.0.1:" + strconv.Itoa(nport)}},
	} {
		res := component(b.typ, b.md)
		topic := "e2e" + strings.ReplaceAll(strings.ToLower(b.name), " ", "")
		appPort := freePort()
		app := start(sub, "-addr", "127.0.0.1:"+strconv.Itoa(appPort), "-topics", topic)
		waitLog(app, "listening on")
		startSidecar(sy, "sub-"+topic, appPort, res)
		ps := startSidecar(sy, "pub-"+topic, 0, res)
		time.Sleep(300 * time.Millisecond) // the subscription is set up after healthz; the group reads from the start anyway
		client := &fasthttp.HostClient{Addr: "127.0.0.1:" + strconv.Itoa(ps.http)}
		tick := time.NewTicker(time.Second / time.Duration(*e2eRate))
		for i := 0; i < *e2eN; i++ {
			<-tick.C
			body := fmt.Sprintf(`{"n":%d,"sent":%d}`, i, time.Now().UnixNano())
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.SetRequestURI("http://127.0.0.1:" + strconv.Itoa(ps.http) + "/v1.0/publish/pubsub/" + topic)
			req.Header.SetMethod("POST")
			req.Header.SetContentType("application/json")
			req.SetBodyString(body)
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != 204 {
				fail("e2e publish: %v %d", err, resp.StatusCode())
			}
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
		}
		tick.Stop()
		var st struct {
			Distinct int       `json:"distinct"`
			Latency  []float64 `json:"latency_ms"`
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			r, err := http.Get("http://127.0.0.1:" + strconv.Itoa(appPort) + "/stats")
			if err == nil {
				_ = json.NewDecoder(r.Body).Decode(&st)
				r.Body.Close()
				if st.Distinct >= *e2eN {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		sort.Float64s(st.Latency)
		if len(st.Latency) == 0 {
			fail("%s: nothing delivered", b.name)
		}
		fmt.Printf("end to end %-16s %d/%d delivered at %d msg/s   p50 %7.3f ms   p99 %7.3f ms\n", b.name, st.Distinct, *e2eN, *e2eRate,
			st.Latency[len(st.Latency)/2], st.Latency[len(st.Latency)*99/100])
	}
}

func waitLog(p *proc, s string) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.Open(p.out.Name())
		if err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if strings.Contains(sc.Text(), s) {
					f.Close()
					return
				}
			}
			f.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
	fail("%s never printed %q", p.name, s)
}
