package http_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/listeners"
	_ "github.com/switchyard-proxy/switchyard/listeners/http"
)

// startApp serves a small fasthttp app on 127.0.0.1 that answers with the
// value of the X-Version header it was configured with.
func startApp(t testing.TB, version string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Version", version)
		ctx.SetBody(ctx.Request.Body())
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().(*net.TCPAddr).Port
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func snapshot(appPort int, httpAddr string, routes []config.Route, clusters []config.Cluster) *config.Snapshot {
	return config.NewSnapshot(&config.Config{
		AppID: "orders", AppPort: appPort, AppProtocol: "http", AppChannelAddress: "127.0.0.1",
		Listeners: []config.Listener{{Name: "dapr_http", Kind: "http", Addresses: []string{httpAddr}}},
		Routes:    routes, Clusters: clusters,
	}, "test")
}

// TestSnapshotSwapUnderLoad swaps the whole configuration (routes and
// clusters) over and over while requests are in flight: none may fail, and
// after the last swap the last configuration serves.
func TestSnapshotSwapUnderLoad(t *testing.T) {
	v1, v2 := startApp(t, "v1"), startApp(t, "v2")
	addr := freeAddr(t)
	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: stats.NewRegistry("dapr_")}
	mgr := listeners.NewManager(rt, 200*time.Millisecond)
	defer mgr.Close(context.Background())
	snapFor := func(i int) *config.Snapshot {
		port := []int{v1, v2}[i%2]
		return snapshot(v1, addr, []config.Route{{Name: "all", Match: config.RouteMatch{Prefix: "/invoke/orders/"}, Cluster: "target"}},
			[]config.Cluster{{Name: "target", Kind: "http", Endpoints: []string{"127.0.0.1:" + strconv.Itoa(port)}}})
	}
	if err := mgr.Apply(context.Background(), snapFor(0)); err != nil {
		t.Fatal(err)
	}
	rt.Health.SetOutboundReady(true)

	client := &fasthttp.HostClient{Addr: addr, MaxConns: 64}
	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				select {
				case <-stop:
					return
				default:
				}
				req.SetRequestURI("http://" + addr + "/v1.0/invoke/orders/method/x")
				req.Header.SetMethod("POST")
				req.SetBodyString("ping")
				err := client.Do(req, resp)
				if err != nil || resp.StatusCode() != 200 || string(resp.Body()) != "ping" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("err=%v status=%d body=%q", err, resp.StatusCode(), resp.Body()))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	swaps := 0
	deadline := time.Now().Add(2 * time.Second)
	for i := 1; time.Now().Before(deadline); i++ {
		if err := mgr.Apply(context.Background(), snapFor(i)); err != nil {
			t.Fatal(err)
		}
		swaps++
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during %d swaps; first: %v", failed.Load(), ok.Load()+failed.Load(), swaps, firstErr.Load())
	}
	if ok.Load() < 100 || swaps < 50 {
		t.Fatalf("too little traffic to mean anything: %d requests, %d swaps", ok.Load(), swaps)
	}
	// the last snapshot serves
	want := []string{"v1", "v2"}[(swaps)%2]
	var req fasthttp.Request
	var resp fasthttp.Response
	req.SetRequestURI("http://" + addr + "/v1.0/invoke/orders/method/x")
	if err := client.Do(&req, &resp); err != nil || string(resp.Header.Peek("X-Version")) != want {
		t.Fatalf("after the swaps: %v version %q, want %q", err, resp.Header.Peek("X-Version"), want)
	}
	t.Logf("%d requests, %d snapshot swaps, 0 failures", ok.Load(), swaps)
}

// TestBadSnapshotKeepsServing: a snapshot that cannot be built is refused
// whole and the old one keeps serving.
func TestBadSnapshotKeepsServing(t *testing.T) {
	v1 := startApp(t, "v1")
	addr := freeAddr(t)
	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: "test", Stats: stats.NewRegistry("dapr_")}
	mgr := listeners.NewManager(rt, 50*time.Millisecond)
	defer mgr.Close(context.Background())
	if err := mgr.Apply(context.Background(), snapshot(v1, addr, nil, nil)); err != nil {
		t.Fatal(err)
	}
	bad := snapshot(v1, addr, []config.Route{{Name: "r", Cluster: "missing"}}, nil)
	if err := mgr.Apply(context.Background(), bad); err == nil {
		t.Fatal("a route to a missing cluster was accepted")
	}
	code, body, err := fasthttp.Get(nil, "http://"+addr+"/v1.0/invoke/orders/method/x")
	if err != nil || code != 200 || string(body) != "" {
		t.Fatalf("old snapshot stopped serving: %v %d %q", err, code, body)
	}
	if got := rt.Snapshot(); got.Config.Routes != nil {
		t.Fatalf("the refused snapshot became current: %+v", got.Config.Routes)
	}
}
