package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// respond is a next handler that answers with a status and a body, or fails.
type respond struct {
	status int
	body   string
	err    error
}

func (r respond) Handle(_ context.Context, ex *filters.Exchange) error {
	if r.err != nil {
		return r.err
	}
	ex.Resp.SetStatusCode(r.status)
	ex.Resp.SetBodyString(r.body)
	return nil
}

func build(t testing.TB, raw map[string]any, reg *stats.Registry, next filters.Handler) filters.Handler {
	t.Helper()
	f := factory{}
	cfg := f.NewConfig()
	if err := config.DecodeStrict(raw, cfg); err != nil {
		t.Fatal(err)
	}
	flt, err := f.Build(cfg, filters.Env{AppID: "checkout", Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return flt.Wrap(next)
}

type request struct {
	proto  filters.Protocol
	verb   string
	app    string // invoke target
	caller string
	body   string
	stream bool
}

type fakeStream struct{}

func (fakeStream) FullMethod() string { return "/svc/M" }
func (fakeStream) Native() any        { return nil }

func run(t testing.TB, h filters.Handler, r request) error {
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = r.proto
	ex.Req.Header.SetMethod(r.verb)
	ex.Req.SetBodyString(r.body)
	ex.SetInvoke([]byte(r.app), []byte("neworder"))
	ex.CallerAppID = []byte(r.caller)
	if r.stream {
		ex.Stream = fakeStream{}
	}
	return h.Handle(context.Background(), ex)
}

func scrape(t *testing.T, reg *stats.Registry) string {
	t.Helper()
	var buf bytes.Buffer
	if err := reg.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestSeries(t *testing.T) {
	denied := filters.NewError(filters.ErrCodePermissionDenied, 403, 7, "acl: denied")
	tests := []struct {
		name    string
		cfg     map[string]any
		next    respond
		reqs    []request
		want    []string // exact sample lines
		notWant []string // substrings that must not appear
	}{
		{
			name: "http invoke of another app",
			next: respond{status: 200, body: "hello"},
			reqs: []request{
				{proto: filters.ProtocolHTTP, verb: "POST", app: "orders", body: "abc"},
				{proto: filters.ProtocolHTTP, verb: "POST", app: "orders"},
			},
			want: []string{
				`dapr_http_server_request_count{app_id="checkout",method="POST",path="",status="200"} 2`,
				`dapr_http_server_response_count{app_id="checkout",method="POST",path="",status="200"} 2`,
				`dapr_http_server_latency_count{app_id="checkout",method="POST",path="",status="200"} 2`,
				`dapr_http_server_request_bytes_sum{app_id="checkout"} 3`,
				`dapr_http_server_response_bytes_sum{app_id="checkout"} 10`,
				`dapr_runtime_service_invocation_req_sent_total{app_id="checkout",dst_app_id="orders",type="unary"} 2`,
				`dapr_runtime_service_invocation_res_recv_total{app_id="checkout",src_app_id="orders",status="200",type="unary"} 2`,
				`dapr_runtime_service_invocation_res_recv_latency_ms_count{app_id="checkout",src_app_id="orders",status="200"} 2`,
			},
			notWant: []string{"req_recv_total{", "res_sent_total{"},
		},
		{
			name: "unknown verb and excluded verbs",
			cfg:  map[string]any{"exclude_verbs": true},
			next: respond{status: 204},
			reqs: []request{
				{proto: filters.ProtocolHTTP, verb: "BREW", app: "checkout"},
				{proto: filters.ProtocolHTTP, verb: "GET", app: "checkout"},
			},
			want: []string{
				`dapr_http_server_request_count{app_id="checkout",method="",path="",status="204"} 2`,
			},
			// our own app id: no service invocation series
			notWant: []string{"req_sent_total{", "BREW", `method="GET"`},
		},
		{
			name: "unknown verb",
			next: respond{status: 200},
			reqs: []request{{proto: filters.ProtocolHTTP, verb: "BREW", app: "checkout"}},
			want: []string{`dapr_http_server_request_count{app_id="checkout",method="UNKNOWN",path="",status="200"} 1`},
		},
		{
			name: "error from the chain",
			next: respond{err: denied},
			reqs: []request{{proto: filters.ProtocolHTTP, verb: "GET", app: "orders"}},
			want: []string{
				`dapr_http_server_request_count{app_id="checkout",method="GET",path="",status="403"} 1`,
				`dapr_runtime_service_invocation_req_sent_total{app_id="checkout",dst_app_id="orders",type="unary"} 1`,
			},
			// no response came back from orders
			notWant: []string{"res_recv_total{"},
		},
		{
			name: "plain error is a 500",
			next: respond{err: errors.New("boom")},
			reqs: []request{{proto: filters.ProtocolHTTP, verb: "GET", app: "orders"}},
			want: []string{`dapr_http_server_request_count{app_id="checkout",method="GET",path="",status="500"} 1`},
		},
		{
			name: "grpc streaming invoke",
			next: respond{status: 200},
			reqs: []request{{proto: filters.ProtocolGRPC, app: "orders", stream: true}},
			want: []string{
				`dapr_runtime_service_invocation_req_sent_total{app_id="checkout",dst_app_id="orders",type="streaming"} 1`,
				`dapr_runtime_service_invocation_res_recv_total{app_id="checkout",src_app_id="orders",status="200",type="streaming"} 1`,
			},
			notWant: []string{"http_server_request_count{"},
		},
		{
			name: "internal listener",
			next: respond{status: 404},
			reqs: []request{
				{proto: filters.ProtocolInternal, app: "checkout", caller: "frontend"},
				{proto: filters.ProtocolInternal, app: "checkout", caller: "frontend"},
			},
			want: []string{
				`dapr_runtime_service_invocation_req_recv_total{app_id="checkout",src_app_id="frontend"} 2`,
				`dapr_runtime_service_invocation_res_sent_total{app_id="checkout",dst_app_id="frontend",status="404"} 2`,
			},
			notWant: []string{"req_sent_total{", "http_server_request_count{"},
		},
		{
			name: "app ids beyond the cap go to other",
			cfg:  map[string]any{"max_app_ids": 2},
			next: respond{status: 200},
			reqs: []request{
				{proto: filters.ProtocolGRPC, app: "a"},
				{proto: filters.ProtocolGRPC, app: "b"},
				{proto: filters.ProtocolGRPC, app: "c"},
				{proto: filters.ProtocolGRPC, app: "d"},
				{proto: filters.ProtocolGRPC, app: "a"},
			},
			want: []string{
				`dapr_runtime_service_invocation_req_sent_total{app_id="checkout",dst_app_id="a",type="unary"} 2`,
				`dapr_runtime_service_invocation_req_sent_total{app_id="checkout",dst_app_id="b",type="unary"} 1`,
				`dapr_runtime_service_invocation_req_sent_total{app_id="checkout",dst_app_id="other",type="unary"} 2`,
			},
			notWant: []string{`dst_app_id="c"`, `dst_app_id="d"`},
		},
		{
			name: "odd status codes go to other",
			next: respond{status: 999},
			reqs: []request{{proto: filters.ProtocolHTTP, verb: "GET", app: "checkout"}},
			want: []string{`dapr_http_server_request_count{app_id="checkout",method="GET",path="",status="other"} 1`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := stats.NewRegistry("dapr_")
			h := build(t, tt.cfg, reg, tt.next)
			for _, r := range tt.reqs {
				_ = run(t, h, r)
			}
			out := scrape(t, reg)
			lines := map[string]bool{}
			for _, l := range strings.Split(out, "\n") {
				lines[l] = true
			}
			for _, w := range tt.want {
				if !lines[w] {
					t.Errorf("missing sample %s\n--- scrape:\n%s", w, grepSamples(out))
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(grepSamples(out), nw) {
					t.Errorf("unexpected %q in\n%s", nw, grepSamples(out))
				}
			}
		})
	}
}

// grepSamples drops comment lines and zero histogram buckets for readable failures.
func grepSamples(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if l == "" || strings.HasPrefix(l, "#") || strings.Contains(l, "_bucket{") {
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestNoRegistry(t *testing.T) {
	next := respond{status: 200}
	flt, err := factory{}.Build(&Config{}, filters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if h := flt.Wrap(next); h != filters.Handler(next) {
		t.Fatal("without a registry the filter should not wrap")
	}
}

func TestValidate(t *testing.T) {
	if err := (&Config{MaxAppIDs: -1}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "metrics: ") {
		t.Fatalf("err = %v", err)
	}
}

func TestAllocs(t *testing.T) {
	reg := stats.NewRegistry("dapr_")
	h := build(t, nil, reg, respond{status: 200})
	cases := []request{
		{proto: filters.ProtocolHTTP, verb: "POST", app: "orders", body: "x"},
		{proto: filters.ProtocolHTTP, verb: "GET", app: "checkout"},
		{proto: filters.ProtocolGRPC, app: "orders"},
		{proto: filters.ProtocolInternal, app: "checkout", caller: "frontend"},
	}
	for i, r := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			ex.Protocol = r.proto
			ex.Req.Header.SetMethod(r.verb)
			ex.Req.SetBodyString(r.body)
			ex.SetInvoke([]byte(r.app), []byte("neworder"))
			ex.CallerAppID = []byte(r.caller)
			ctx := context.Background()
			_ = h.Handle(ctx, ex) // warm the series caches
			if n := testing.AllocsPerRun(1000, func() { _ = h.Handle(ctx, ex) }); n != 0 {
				t.Fatalf("%v allocations per request, want 0", n)
			}
		})
	}
}

func BenchmarkHandle(b *testing.B) {
	reg := stats.NewRegistry("dapr_")
	h := build(b, nil, reg, respond{status: 200})
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolHTTP
	ex.Req.Header.SetMethod("POST")
	ex.Req.SetBodyString("payload")
	ex.SetInvoke([]byte("orders"), []byte("neworder"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = h.Handle(ctx, ex)
	}
}
