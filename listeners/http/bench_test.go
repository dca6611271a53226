package http

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// BenchmarkInvokeHTTP measures the HTTP invoke path of one request: the
// listener's handler (decode, exchange), the chain (router), the HTTP app
// cluster (rewrite, pooled keep-alive client) and a real app on loopback.
// allocs/op is the figure to watch; ns/op includes the loopback round trip.
func BenchmarkInvokeHTTP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	app := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }}
	go func() { _ = app.Serve(ln) }()
	defer app.Shutdown()

	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: "bench", Stats: stats.NewRegistry("dapr_")}
	mgr := listeners.NewManager(rt, time.Second)
	defer mgr.Close(context.Background())
	cfg := &config.Config{AppID: "app", AppPort: ln.Addr().(*net.TCPAddr).Port, AppProtocol: "http", AppChannelAddress: "127.0.0.1"}
	if err := mgr.Apply(context.Background(), config.NewSnapshot(cfg, "bench")); err != nil {
		b.Fatal(err)
	}
	chain, err := filters.BuildChain(nil, filters.Env{AppID: "app", Clusters: rt.Clusters(), Metrics: rt.Stats, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	ref := &listeners.ChainRef{}
	ref.Store(chain)
	l := &Listener{name: "bench", chain: ref, rt: rt, log: zap.NewNop()}

	var tmpl fasthttp.Request
	tmpl.SetRequestURI("/v1.0/invoke/app/method/echo?x=1")
	tmpl.Header.SetHost("127.0.0.1:3500")
	tmpl.Header.Set("Content-Type", "application/json")
	tmpl.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	tmpl.SetBodyString(`{"hello":"world"}`)
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	var ctx fasthttp.RequestCtx
	run := func() {
		ctx.Init(&tmpl, remote, nil)
		l.serve(&ctx)
		if ctx.Response.StatusCode() != 200 || len(ctx.Response.Body()) != len(body) {
			b.Fatalf("status %d body %q", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	for range 100 {
		run()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		run()
	}
}
