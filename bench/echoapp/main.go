// Command echoapp is the upstream application of the load benchmark in bench/
// (bench/run.sh, bench/startup.sh). One process serves:
//
//   - HTTP (fasthttp) on -http-port:
//     /echo, /method/<m>, /v1.0/invoke/<app-id>/method/<m>  (any HTTP method)
//     GET/HEAD return a fixed payload of -payload bytes (64 by default),
//     other methods return the request body unchanged.
//     /healthz returns 200 "ok".
//   - gRPC on -grpc-port: a proto-free echo service "echo.Echo/Echo" whose
//     handler echoes the raw request message bytes (a raw []byte codec, so no
//     protoc is needed), plus the standard grpc.health.v1.Health service.
//     Because the echo is byte-for-byte, a client may describe the method as
//     rpc Echo(google.protobuf.BytesValue) returns (google.protobuf.BytesValue)
//     (see echo.proto) and use ordinary proto tooling such as ghz.
//
// It also has a client mode used by the scripts as a readiness/correctness
// check of a gRPC path (direct or through a proxy):
//
//	echoapp -check-grpc 127.0.0.1:50051 [-check-header 'dapr-app-id: app']
//
// and a minimal fasthttp reverse-proxy mode, a stand-in "sidecar" for trying
// proxy.sh and a rough ceiling for a fasthttp-based proxy on this machine:
//
//	echoapp -http-port 3500 -grpc-port 0 -proxy-to 127.0.0.1:13000
//
// It rewrites /v1.0/invoke/<app-id>/method/<m> to /<m> and forwards with a
// keep-alive fasthttp.HostClient; like the sidecar, it answers
// GET /v1.0/healthz with 204, so it can stand in for switchyard in
// bench/run.sh --proxy-cmd and bench/startup.sh --cmd.
//
// Build it from the repository root:
//
//	go build -o "$WORK/bin/echoapp" ./bench/echoapp
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// rawMsg carries an undecoded gRPC message.
type rawMsg struct{ b []byte }

// rawCodec passes *rawMsg through untouched and falls back to protobuf for
// real proto messages (the health service). It is forced on the server, so it
// answers for every content-subtype.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *rawMsg:
		return m.b, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *rawMsg:
		// grpc may reuse data after we return: copy.
		m.b = append(m.b[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
}

func echoHandler(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	m := new(rawMsg)
	if err := dec(m); err != nil {
		return nil, err
	}
	return m, nil
}

var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: "echo.Echo",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Metadata:    "echo.proto",
}

var (
	pathEcho    = []byte("/echo")
	pathHealth  = []byte("/healthz")
	pathDaprHZ  = []byte("/v1.0/healthz")
	pfxMethod   = []byte("/method/")
	pfxInvoke   = []byte("/v1.0/invoke/")
	infixMethod = []byte("/method/")
)

func isEchoPath(p []byte) bool {
	if bytes.Equal(p, pathEcho) || bytes.HasPrefix(p, pfxMethod) {
		return true
	}
	if bytes.HasPrefix(p, pfxInvoke) {
		rest := p[len(pfxInvoke):]
		i := bytes.IndexByte(rest, '/')
		return i > 0 && bytes.HasPrefix(rest[i:], infixMethod)
	}
	return false
}

func newHTTPHandler(payload []byte) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		p := ctx.Path()
		switch {
		case isEchoPath(p):
			ctx.SetContentType("text/plain")
			if ctx.IsGet() || ctx.IsHead() {
				ctx.SetBody(payload)
			} else {
				ctx.SetBody(ctx.PostBody())
			}
		case bytes.Equal(p, pathHealth):
			ctx.SetBodyString("ok")
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
		}
	}
}

var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func newProxyHandler(upstream string) fasthttp.RequestHandler {
	hc := &fasthttp.HostClient{
		Addr:                upstream,
		MaxConns:            1024,
		MaxIdleConnDuration: 120 * time.Second,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
	}
	return func(ctx *fasthttp.RequestCtx) {
		p := ctx.Path()
		if bytes.Equal(p, pathHealth) {
			ctx.SetBodyString("ok")
			return
		}
		if bytes.Equal(p, pathDaprHZ) {
			ctx.SetStatusCode(fasthttp.StatusNoContent)
			return
		}
		if bytes.HasPrefix(p, pfxInvoke) {
			rest := p[len(pfxInvoke):]
			if i := bytes.IndexByte(rest, '/'); i > 0 && bytes.HasPrefix(rest[i:], infixMethod) {
				var tmp [256]byte
				ctx.Request.URI().SetPathBytes(append(tmp[:0], rest[i+len(infixMethod)-1:]...))
			}
		}
		for _, h := range hopHeaders {
			ctx.Request.Header.Del(h)
		}
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("upstream: "+err.Error(), fasthttp.StatusBadGateway)
			return
		}
		for _, h := range hopHeaders {
			ctx.Response.Header.Del(h)
		}
	}
}

func checkGRPC(addr, header string, size int) error {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if header != "" {
		k, v, ok := strings.Cut(header, ":")
		if !ok {
			return fmt.Errorf("bad -check-header %q (want 'key: value')", header)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, strings.TrimSpace(k), strings.TrimSpace(v))
	}
	// A serialized google.protobuf.BytesValue{value: <size bytes>}.
	req := &rawMsg{b: append(protowireBytesField(size), bytes.Repeat([]byte{'x'}, size)...)}
	resp := new(rawMsg)
	if err := conn.Invoke(ctx, "/echo.Echo/Echo", req, resp); err != nil {
		return err
	}
	if !bytes.Equal(req.b, resp.b) {
		return fmt.Errorf("echo mismatch: sent %d bytes, got %d", len(req.b), len(resp.b))
	}
	return nil
}

// protowireBytesField returns the tag+varint length prefix of field 1 (bytes).
func protowireBytesField(n int) []byte {
	b := []byte{0x0a}
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

func main() {
	addr := flag.String("addr", "127.0.0.1", "listen address")
	httpPort := flag.Int("http-port", 3000, "HTTP (fasthttp) port, 0 to disable")
	grpcPort := flag.Int("grpc-port", 50051, "gRPC port, 0 to disable")
	payloadSize := flag.Int("payload", 64, "size of the fixed GET payload in bytes")
	check := flag.String("check-grpc", "", "client mode: call echo.Echo/Echo once on this host:port and exit 0 if the echo matches")
	checkHeader := flag.String("check-header", "", "client mode: extra metadata 'key: value'")
	proxyTo := flag.String("proxy-to", "", "proxy mode: forward HTTP to this host:port instead of echoing")
	flag.Parse()

	if *check != "" {
		if err := checkGRPC(*check, *checkHeader, *payloadSize); err != nil {
			fmt.Fprintln(os.Stderr, "check-grpc:", err)
			os.Exit(1)
		}
		fmt.Println("check-grpc: ok")
		return
	}

	payload := bytes.Repeat([]byte{'x'}, *payloadSize)
	if *payloadSize > 0 {
		payload[len(payload)-1] = '\n'
	}

	errc := make(chan error, 2)
	if *httpPort > 0 {
		ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", *addr, *httpPort))
		if err != nil {
			log.Fatal(err)
		}
		handler := newHTTPHandler(payload)
		if *proxyTo != "" {
			handler = newProxyHandler(*proxyTo)
		}
		srv := &fasthttp.Server{
			Handler:               handler,
			Name:                  "echoapp",
			NoDefaultServerHeader: true,
			ReadTimeout:           60 * time.Second,
			IdleTimeout:           120 * time.Second,
		}
		go func() { errc <- srv.Serve(ln) }()
		log.Printf("echoapp: HTTP on %s", ln.Addr())
	}
	if *grpcPort > 0 {
		ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", *addr, *grpcPort))
		if err != nil {
			log.Fatal(err)
		}
		gs := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
		gs.RegisterService(&echoServiceDesc, nil)
		healthpb.RegisterHealthServer(gs, health.NewServer())
		go func() { errc <- gs.Serve(ln) }()
		log.Printf("echoapp: gRPC on %s", ln.Addr())
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Printf("echoapp: %v, exiting", s)
	case err := <-errc:
		log.Fatalf("echoapp: server error: %v", err)
	}
}
