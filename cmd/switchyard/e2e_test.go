package main_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-proxy/switchyard/internal/e2e"
)

// The end-to-end tests build the switchyard binary and the test apps, and
// run them as real processes on 127.0.0.1.

var bins struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func binary(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs processes")
	}
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "switchyard-e2e-")
		if bins.err != nil {
			return
		}
		for _, p := range []struct{ out, pkg string }{
			{"switchyard", "."},
			{"grpcapp", "../../internal/testapps/grpcapp"},
			{"echohttp", "../../internal/testapps/echohttp"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(bins.dir, p.out), p.pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", p.pkg, err, out)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, name)
}

func freePort(t *testing.T) int { return e2e.FreePort(t) }

// start starts bin; name labels its output when the test fails.
func start(t *testing.T, name, bin string, args ...string) *e2e.Proc {
	t.Helper()
	p := e2e.Start(t, nil, bin, args...)
	p.Name = name
	return p
}

type sidecar struct {
	*e2e.Proc
	id                   string
	http, grpc, internal int
}

// startSidecar runs switchyard with static name resolution for apps (app
// id -> internal ports) and waits until /v1.0/healthz answers 204.
func startSidecar(t *testing.T, id string, internal, appPort int, appProto string, apps map[string][]int, extra ...string) *sidecar {
	t.Helper()
	s := &sidecar{id: id, http: freePort(t), grpc: freePort(t), internal: internal}
	var y strings.Builder
	fmt.Fprintf(&y, "listeners:\n")
	fmt.Fprintf(&y, "  - {name: dapr_http, kind: http, addresses: [\"127.0.0.1:%d\"]}\n", s.http)
	fmt.Fprintf(&y, "  - {name: dapr_grpc, kind: grpc, addresses: [\"127.0.0.1:%d\"]}\n", s.grpc)
	fmt.Fprintf(&y, "  - {name: dapr_internal, kind: internal, addresses: [\"127.0.0.1:%d\"]}\n", s.internal)
	fmt.Fprintf(&y, "name_resolution:\n  scheme: static\n  config:\n    apps:\n")
	for app, ports := range apps {
		var addrs []string
		for _, p := range ports {
			addrs = append(addrs, strconv.Quote(fmt.Sprintf("127.0.0.1:%d", p)))
		}
		fmt.Fprintf(&y, "      %s: [%s]\n", app, strings.Join(addrs, ", "))
	}
	file := filepath.Join(t.TempDir(), id+".yaml")
	if err := os.WriteFile(file, []byte(y.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--app-id", id, "-c", file, "--log-level", "warn"}
	if appPort != 0 {
		args = append(args, "--app-port", strconv.Itoa(appPort), "--app-protocol", appProto)
	}
	args = append(args, extra...)
	s.Proc = start(t, "sidecar "+id, binary(t, "switchyard"), args...)
	waitHealthy(t, s)
	return s
}

func waitHealthy(t *testing.T, s *sidecar) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", s.http)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.Done:
			t.Fatalf("sidecar %s exited:\n%s", s.id, s.Output())
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // polling the readiness signal
	}
	t.Fatalf("sidecar %s not healthy in time:\n%s", s.id, s.Output())
}

// topology: sidecar "web" in front of an HTTP app, "rpc" in front of a gRPC
// app, and "client" without an app.
type topology struct {
	web, rpc, client *sidecar
}

func startTopology(t *testing.T, extra ...string) *topology {
	t.Helper()
	httpPort, grpcPort := freePort(t), freePort(t)
	start(t, "echohttp", binary(t, "echohttp"), "-port", strconv.Itoa(httpPort), "-name", "web-1")
	start(t, "grpcapp", binary(t, "grpcapp"), "-port", strconv.Itoa(grpcPort), "-name", "rpc-1")
	iw, ir, ic := freePort(t), freePort(t), freePort(t)
	apps := map[string][]int{"web": {iw}, "rpc": {ir}, "client": {ic}}
	return &topology{
		web:    startSidecar(t, "web", iw, httpPort, "http", apps, extra...),
		rpc:    startSidecar(t, "rpc", ir, grpcPort, "grpc", apps, extra...),
		client: startSidecar(t, "client", ic, 0, "", apps, extra...),
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// TestInvokeOverHTTP runs every pair of calls twice: between sidecars that
// use the HTTP/1.1 peer link once they learned it and forward gRPC proxying
// calls for their own app as HTTP/2 frames (the defaults), and between
// sidecars that only speak the internal gRPC API and proxy through grpc-go
// (--internal-http=false --grpc-frame-proxy=false), and a third time with
// one request per connection to the HTTP app (--app-pipeline-connections 0;
// the default pipelines them). The answers must be the same.
func TestInvokeOverHTTP(t *testing.T) {
	for _, tr := range []struct {
		name string
		args []string
	}{
		{"peer link and frame proxying", nil},
		{"internal gRPC and grpc-go proxying", []string{"--internal-http=false", "--grpc-frame-proxy=false"}},
		// One request per connection to the HTTP app, as before pipelining
		// was the default.
		{"one request per connection to the app", []string{"--app-pipeline-connections", "0"}},
	} {
		t.Run(tr.name, func(t *testing.T) { testInvoke(t, startTopology(t, tr.args...)) })
	}
}

func testInvoke(t *testing.T, top *topology) {
	type want struct {
		status  int
		body    string
		headers map[string]string
	}
	cases := []struct {
		name   string
		from   *sidecar
		method string
		path   string
		header map[string]string
		body   string
		want   want
	}{
		{"client to HTTP app", top.client, "POST", "/v1.0/invoke/web/method/orders/new?x=1&y=2",
			map[string]string{"Content-Type": "text/plain", "X-Custom": "hi"}, "hello",
			want{200, "hello", map[string]string{"X-Method": "POST", "X-Path": "/orders/new", "X-Query": "x=1&y=2",
				"X-Caller": "client", "X-Echo-Custom": "hi", "Content-Type": "text/plain", "X-Instance": "web-1"}}},
		{"verb carried", top.client, "PUT", "/v1.0/invoke/web/method/thing", nil, "x",
			want{200, "x", map[string]string{"X-Method": "PUT"}}},
		{"GET without body", top.rpc, "GET", "/v1.0/invoke/web/method/thing?q=1", nil, "",
			want{200, "", map[string]string{"X-Method": "GET", "X-Query": "q=1", "X-Caller": "rpc"}}},
		{"dapr-app-id header form", top.client, "POST", "/hdr/form", map[string]string{"dapr-app-id": "web"}, "h",
			want{200, "h", map[string]string{"X-Path": "/hdr/form"}}},
		{"status kept", top.client, "POST", "/v1.0/invoke/web/method/x?status=404", nil, "missing",
			want{404, "missing", nil}},
		{"created kept", top.client, "POST", "/v1.0/invoke/web/method/x?status=201", nil, "made",
			want{201, "made", nil}},
		{"own app id short-cuts", top.web, "POST", "/v1.0/invoke/web/method/self", nil, "me",
			want{200, "me", map[string]string{"X-Caller": "web", "X-Path": "/self"}}},
		{"client to gRPC app", top.client, "POST", "/v1.0/invoke/rpc/method/echo?a=b", map[string]string{"Content-Type": "application/json"}, `{"a":1}`,
			want{200, `{"a":1}`, map[string]string{"Content-Type": "application/json", "X-Caller": "client", "X-Method": "echo", "X-Query": "a=b", "X-Verb": "POST"}}},
		{"gRPC app error", top.client, "POST", "/v1.0/invoke/rpc/method/fail", nil, "",
			want{404, "", nil}},
		{"HTTP app to gRPC app", top.web, "GET", "/v1.0/invoke/rpc/method/echo", nil, "",
			want{200, "", map[string]string{"X-Caller": "web", "X-Verb": "GET"}}},
		{"unknown app id", top.client, "POST", "/v1.0/invoke/nobody/method/x", nil, "",
			want{500, "ERR_DIRECT_INVOKE", nil}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, fmt.Sprintf("http://127.0.0.1:%d%s", tc.from.http, tc.path), strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.want.status, b)
			}
			if tc.want.body != "" && !strings.Contains(string(b), tc.want.body) {
				t.Errorf("body %q, want %q", b, tc.want.body)
			}
			for k, v := range tc.want.headers {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}

	t.Run("Dapr Go SDK", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := dapr.NewClientWithAddressContext(ctx, fmt.Sprintf("127.0.0.1:%d", top.client.grpc))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sdk := []struct {
			name, app, method, verb string
			content                 *dapr.DataContent
			want                    string
		}{
			{"InvokeMethodWithContent HTTP app", "web", "orders", "post", &dapr.DataContent{Data: []byte("sdk-body"), ContentType: "text/plain"}, "sdk-body"},
			{"InvokeMethodWithContent gRPC app", "rpc", "echo", "post", &dapr.DataContent{Data: []byte(`{"k":"v"}`), ContentType: "application/json"}, `{"k":"v"}`},
			{"InvokeMethod HTTP app", "web", "ping", "get", nil, ""},
			{"InvokeMethod gRPC app", "rpc", "ping", "get", nil, ""},
		}
		for _, tc := range sdk {
			t.Run(tc.name, func(t *testing.T) {
				var out []byte
				var err error
				if tc.content != nil {
					out, err = c.InvokeMethodWithContent(ctx, tc.app, tc.method, tc.verb, tc.content)
				} else {
					out, err = c.InvokeMethod(ctx, tc.app, tc.method, tc.verb)
				}
				if err != nil {
					t.Fatal(err)
				}
				if string(out) != tc.want {
					t.Errorf("got %q, want %q", out, tc.want)
				}
			})
		}
		t.Run("GetMetadata", func(t *testing.T) {
			md, err := c.GetMetadata(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if md.ID != "client" {
				t.Errorf("id %q, want client", md.ID)
			}
		})
		t.Run("HTTP app status as gRPC error", func(t *testing.T) {
			_, err := c.InvokeMethodWithContent(ctx, "web", "x?status=404", "post", &dapr.DataContent{Data: []byte("a"), ContentType: "text/plain"})
			if err == nil {
				t.Fatal("want an error")
			}
		})
		t.Run("gRPC app error code kept", func(t *testing.T) {
			_, err := c.InvokeMethod(ctx, "rpc", "fail", "post")
			if status.Code(errors.Unwrap(err)) != codes.NotFound && !strings.Contains(err.Error(), "NotFound") {
				t.Fatalf("got %v, want NotFound", err)
			}
		})
		t.Run("unimplemented names the method", func(t *testing.T) {
			_, err := c.GetState(ctx, "store", "k", nil)
			if err == nil || !strings.Contains(err.Error(), "GetState") || !strings.Contains(err.Error(), "Unimplemented") {
				t.Fatalf("got %v, want Unimplemented naming GetState", err)
			}
		})
	})

	t.Run("gRPC proxying", func(t *testing.T) {
		testProxying(t, top)
	})
}

func testProxying(t *testing.T, top *topology) {
	for _, via := range []struct {
		name string
		sc   *sidecar
	}{{"remote sidecar", top.client}, {"own sidecar", top.rpc}} {
		t.Run(via.name, func(t *testing.T) {
			cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", via.sc.grpc), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			tc := testgrpc.NewTestServiceClient(cc)
			base := metadata.NewOutgoingContext(context.Background(), metadata.Pairs("dapr-app-id", "rpc", "x-hello", "world"))
			ctx, cancel := context.WithTimeout(base, 10*time.Second)
			defer cancel()

			t.Run("unary with headers and trailers", func(t *testing.T) {
				var hdr, trl metadata.MD
				resp, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}}, grpc.Header(&hdr), grpc.Trailer(&trl))
				if err != nil {
					t.Fatal(err)
				}
				if string(resp.GetPayload().GetBody()) != "ping" {
					t.Errorf("body %q", resp.GetPayload().GetBody())
				}
				if v := hdr.Get("x-hello"); len(v) != 1 || v[0] != "world" {
					t.Errorf("header x-hello = %v", v)
				}
				if v := trl.Get("x-trailer"); len(v) != 1 || v[0] != "done" {
					t.Errorf("trailer x-trailer = %v", v)
				}
			})
			t.Run("unary status", func(t *testing.T) {
				_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "not now"}})
				if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != "not now" {
					t.Fatalf("got %v, want FailedPrecondition: not now", err)
				}
			})
			t.Run("server streaming", func(t *testing.T) {
				st, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
					Payload:            &testgrpc.Payload{Body: []byte("abc")},
					ResponseParameters: []*testgrpc.ResponseParameters{{Size: 3}, {Size: 10}, {Size: 100000}},
				})
				if err != nil {
					t.Fatal(err)
				}
				var sizes []int
				for {
					m, err := st.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					sizes = append(sizes, len(m.GetPayload().GetBody()))
				}
				if fmt.Sprint(sizes) != "[3 10 100000]" {
					t.Errorf("sizes %v", sizes)
				}
				if v := st.Trailer().Get("x-trailer"); len(v) != 1 {
					t.Errorf("trailer %v", st.Trailer())
				}
			})
			t.Run("client streaming", func(t *testing.T) {
				st, err := tc.StreamingInputCall(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < 50; i++ {
					if err := st.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 1000)}}); err != nil {
						t.Fatal(err)
					}
				}
				resp, err := st.CloseAndRecv()
				if err != nil {
					t.Fatal(err)
				}
				if resp.GetAggregatedPayloadSize() != 50000 {
					t.Errorf("aggregated %d", resp.GetAggregatedPayloadSize())
				}
			})
			t.Run("bidirectional streaming", func(t *testing.T) {
				st, err := tc.FullDuplexCall(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < 20; i++ {
					msg := fmt.Sprint("m", i)
					if err := st.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(msg)}}); err != nil {
						t.Fatal(err)
					}
					m, err := st.Recv()
					if err != nil {
						t.Fatal(err)
					}
					if string(m.GetPayload().GetBody()) != msg {
						t.Fatalf("got %q want %q", m.GetPayload().GetBody(), msg)
					}
				}
				// A status in the middle of a stream ends it with that status.
				_ = st.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Aborted), Message: "stop"}})
				_, err = st.Recv()
				if s := status.Convert(err); s.Code() != codes.Aborted || s.Message() != "stop" {
					t.Fatalf("got %v, want Aborted: stop", err)
				}
			})
			t.Run("deadline carried", func(t *testing.T) {
				sctx := metadata.AppendToOutgoingContext(ctx, "x-sleep", "5s")
				dctx, cancel := context.WithTimeout(sctx, 300*time.Millisecond)
				defer cancel()
				begin := time.Now()
				_, err := tc.UnaryCall(dctx, &testgrpc.SimpleRequest{})
				if status.Code(err) != codes.DeadlineExceeded {
					t.Fatalf("got %v, want DeadlineExceeded", err)
				}
				if time.Since(begin) > 3*time.Second {
					t.Errorf("took %v", time.Since(begin))
				}
			})
			t.Run("cancellation carried", func(t *testing.T) {
				cctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "x-sleep", "5s"))
				time.AfterFunc(200*time.Millisecond, cancel)
				_, err := tc.UnaryCall(cctx, &testgrpc.SimpleRequest{})
				if status.Code(err) != codes.Canceled {
					t.Fatalf("got %v, want Canceled", err)
				}
			})
		})
	}
}

// TestLoadBalancing runs one app id with two instances behind two sidecars,
// checks both serve, then kills one under load: no request may hang, and
// failures are bounded by what was in flight on the killed instance.
func TestLoadBalancing(t *testing.T) {
	for _, tc := range []struct {
		policy     string
		idempotent bool
	}{{"round_robin", false}, {"least_request", false}, {"round_robin", true}} {
		policy := tc.policy
		name := policy
		if tc.idempotent {
			name += "_idempotent_route"
		}
		t.Run(name, func(t *testing.T) {
			s2, apps, ic := startPool(t)
			caller := startSidecarLB(t, "caller", ic, apps, policy, tc.idempotent)

			url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/pool/method/lb", caller.http)
			seen := map[string]int{}
			for i := 0; i < 40; i++ {
				resp, err := httpClient.Post(url, "text/plain", strings.NewReader("x"))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				seen[resp.Header.Get("X-Instance")]++
			}
			if seen["i1"] == 0 || seen["i2"] == 0 {
				t.Fatalf("both instances should serve: %v", seen)
			}
			if policy == "round_robin" && (seen["i1"] < 15 || seen["i2"] < 15) {
				t.Errorf("round robin should spread evenly: %v", seen)
			}

			// Kill instance 2's sidecar under load.
			const workers = 8
			var ok, failed atomic.Int64
			client := &http.Client{Timeout: 5 * time.Second}
			underLoad(workers, 150, s2.Kill, func() {
				resp, err := client.Post(url, "text/plain", strings.NewReader("x"))
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout") {
						t.Errorf("request hung: %v", err)
					}
					failed.Add(1)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else if failed.Add(1) <= 3 {
					t.Logf("failure %d: %s", resp.StatusCode, b)
				}
			})
			t.Logf("%s: %d ok, %d failed after killing one of two instances under load", name, ok.Load(), failed.Load())
			// Only requests the killed instance may have received can fail
			// (one in flight per worker, and one racing onto the closing
			// connection); on an idempotent route they are retried.
			limit := int64(2 * workers)
			if tc.idempotent {
				limit = 0
			}
			if f := failed.Load(); f > limit {
				t.Errorf("%d requests failed; at most %d may", f, limit)
			}
			// After the kill everything goes to instance 1.
			for i := 0; i < 10; i++ {
				resp, err := httpClient.Post(url, "text/plain", strings.NewReader("x"))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("X-Instance") != "i1" {
					t.Fatalf("after the kill: status %d instance %q", resp.StatusCode, resp.Header.Get("X-Instance"))
				}
			}
		})
	}
}

// startSidecarLB is startSidecar with a configured sidecar cluster for
// "pool" using policy.
func startSidecarLB(t *testing.T, id string, internal int, apps map[string][]int, policy string, idempotent bool) *sidecar {
	t.Helper()
	s := &sidecar{id: id, http: freePort(t), grpc: freePort(t), internal: internal}
	y := fmt.Sprintf(`listeners:
  - {name: dapr_http, kind: http, addresses: ["127.0.0.1:%d"]}
  - {name: dapr_grpc, kind: grpc, addresses: ["127.0.0.1:%d"]}
  - {name: dapr_internal, kind: internal, addresses: ["127.0.0.1:%d"]}
clusters:
  - {name: pool, kind: sidecar, app_id: pool, lb_policy: %s}
routes:
  - {name: pool, match: {prefix: "/invoke/pool/"}, cluster: pool, idempotent: %t}
name_resolution:
  scheme: static
  config:
    apps:
`, s.http, s.grpc, s.internal, policy, idempotent)
	for app, ports := range apps {
		var addrs []string
		for _, p := range ports {
			addrs = append(addrs, strconv.Quote(fmt.Sprintf("127.0.0.1:%d", p)))
		}
		y += fmt.Sprintf("      %s: [%s]\n", app, strings.Join(addrs, ", "))
	}
	file := filepath.Join(t.TempDir(), id+".yaml")
	if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Proc = start(t, "sidecar "+id, binary(t, "switchyard"), "--app-id", id, "-c", file, "--log-level", "warn")
	waitHealthy(t, s)
	return s
}

// TestFrozenInstance: one of two instances of an app id stops answering
// under load without closing its connections (its sidecar is stopped with
// SIGSTOP, as a host that hangs or drops off the network would look). The
// caller's peer link PINGs the silent connection and gives it up: the calls
// that were waiting on it fail within a few keepalive periods (they may have
// reached the app, so they are not retried on this non-idempotent route),
// none hangs, and the rest go to the other instance.
func TestFrozenInstance(t *testing.T) {
	s2, apps, ic := startPool(t)
	const keepalive = 200 * time.Millisecond
	caller := startSidecar(t, "caller", ic, 0, "", apps, "--peer-keepalive", keepalive.String())
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/pool/method/frozen", caller.http)
	client := &http.Client{Timeout: 10 * time.Second}
	post := func() (int, string, string, error) {
		resp, err := client.Post(url, "text/plain", strings.NewReader("x"))
		if err != nil {
			return 0, "", "", err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Instance"), string(b), nil
	}
	seen := map[string]int{}
	for i := 0; i < 20; i++ { // both instances, each over the link after its first call
		code, inst, body, err := post()
		if err != nil || code != 200 {
			t.Fatalf("warm-up: %d %s %v", code, body, err)
		}
		seen[inst]++
	}
	if seen["i1"] == 0 || seen["i2"] == 0 {
		t.Fatalf("both instances should serve: %v", seen)
	}

	const workers = 8
	var ok, failed, byKeepalive, slowest atomic.Int64
	t.Cleanup(func() { _ = s2.Cmd.Process.Signal(syscall.SIGCONT) })
	freeze := func() { freezeProc(t, s2) }
	underLoad(workers, 150, freeze, func() {
		t0 := time.Now()
		code, _, body, err := post()
		if d := int64(time.Since(t0)); d > slowest.Load() {
			slowest.Store(d) // racy max: good enough for a bound
		}
		switch {
		case err != nil:
			t.Errorf("request failed without an answer: %v", err)
			failed.Add(1)
		case code == 200:
			ok.Add(1)
		default:
			failed.Add(1)
			if strings.Contains(body, "keepalive PING") {
				byKeepalive.Add(1)
			} else {
				t.Logf("failure %d: %s", code, body)
			}
		}
	})
	t.Logf("%d ok, %d failed (%d given up by the keepalive), slowest %v, after freezing one of two instances under load",
		ok.Load(), failed.Load(), byKeepalive.Load(), time.Duration(slowest.Load()))
	// Only the calls waiting on the frozen instance's connection fail: one
	// in flight per worker, and those that reached it before it was given up.
	if f := failed.Load(); f > 2*workers || byKeepalive.Load() == 0 || f != byKeepalive.Load() {
		t.Errorf("%d requests failed, %d of them given up by the keepalive; want 1 to %d, all by the keepalive", f, byKeepalive.Load(), 2*workers)
	}
	if d := time.Duration(slowest.Load()); d > 3*time.Second {
		t.Errorf("the slowest request took %v; the keepalive (%v) should end a wait in 2 to 3 periods", d, keepalive)
	}
	for i := 0; i < 10; i++ { // the frozen instance is ejected: everything goes to instance 1
		code, inst, body, err := post()
		if err != nil || code != 200 || inst != "i1" {
			t.Fatalf("after the freeze: %d %q %s %v", code, inst, body, err)
		}
	}
}

// underLoad runs workers goroutines that each call do perWorker times, calls
// event once worker 0 is a third of the way through (the others busy
// meanwhile), and returns when every call is done.
func underLoad(workers, perWorker int, event, do func()) {
	var wg sync.WaitGroup
	at := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				if w == 0 && i == perWorker/3 {
					close(at)
				}
				do()
			}
		}(w)
	}
	<-at
	event()
	wg.Wait()
}

// startPool starts two instances of app id "pool" (HTTP apps i1 and i2, each
// behind its sidecar) and returns the second one's sidecar, the static name
// resolution of "pool" and "caller", and the internal port kept for the
// caller.
func startPool(t *testing.T) (s2 *sidecar, apps map[string][]int, callerPort int) {
	t.Helper()
	p1, p2 := freePort(t), freePort(t)
	start(t, "echohttp-1", binary(t, "echohttp"), "-port", strconv.Itoa(p1), "-name", "i1")
	start(t, "echohttp-2", binary(t, "echohttp"), "-port", strconv.Itoa(p2), "-name", "i2")
	i1, i2, ic := freePort(t), freePort(t), freePort(t)
	apps = map[string][]int{"pool": {i1, i2}, "caller": {ic}}
	startSidecar(t, "pool", i1, p1, "http", apps)
	return startSidecar(t, "pool", i2, p2, "http", apps), apps, ic
}

// TestFrozenPeerGRPCProxying: a gRPC proxying stream (dapr-app-id) open
// through two sidecars, whose callee sidecar then stops answering without
// closing its connections (SIGSTOP). The caller's sidecar PINGs the silent
// HTTP/2 connection (the callee said, in its SETTINGS, that it answers
// PINGs) and gives it up: the stream fails as Unavailable within a few
// keepalive periods instead of holding until its deadline.
func TestFrozenPeerGRPCProxying(t *testing.T) {
	grpcPort := freePort(t)
	start(t, "grpcapp", binary(t, "grpcapp"), "-port", strconv.Itoa(grpcPort), "-name", "rpc-1")
	ir, ic := freePort(t), freePort(t)
	apps := map[string][]int{"rpc": {ir}, "client": {ic}}
	rpc := startSidecar(t, "rpc", ir, grpcPort, "grpc", apps)
	const keepalive = 200 * time.Millisecond
	client := startSidecar(t, "client", ic, 0, "", apps, "--peer-keepalive", keepalive.String())
	cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", client.grpc), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), metadata.Pairs("dapr-app-id", "rpc")), 30*time.Second)
	defer cancel()
	st, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("one")}}); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); err != nil || string(m.GetPayload().GetBody()) != "one" {
		t.Fatalf("before the freeze: %v %v", m, err)
	}
	t.Cleanup(func() { _ = rpc.Cmd.Process.Signal(syscall.SIGCONT) })
	freezeProc(t, rpc)
	begin := time.Now()
	_ = st.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("two")}})
	_, err = st.Recv()
	took := time.Since(begin)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "keepalive PING") {
		t.Fatalf("after %v: %v; want Unavailable for an unanswered keepalive PING", took, err)
	}
	if took > 5*time.Second {
		t.Fatalf("the stream failed only after %v (keepalive %v)", took, keepalive)
	}
	t.Logf("the stream failed %v after the callee sidecar froze", took)
}

// freezeProc stops s's process with SIGSTOP and waits until the kernel shows
// it stopped (the signal takes effect asynchronously).
func freezeProc(t *testing.T, s *sidecar) {
	t.Helper()
	pid := s.Cmd.Process.Pid
	if err := s.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Error(err)
		return
	}
	for i := 0; i < 500; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Error(err)
			return
		}
		// The state follows the command name in parentheses: "pid (comm) T ...".
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "T" {
			return
		}
		time.Sleep(2 * time.Millisecond) // polling the kernel's view of the process
	}
	t.Errorf("sidecar %s did not stop after SIGSTOP", s.id)
}
