package grpcwire

import (
	"encoding/base64"
	"reflect"
	"sort"
	"strings"
	"testing"

	internalv1pb "github.com/dapr/dapr/pkg/proto/internals/v1"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/metadata"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// reqHeaders returns every request header value by lower-case name.
func reqHeaders(h *fasthttp.RequestHeader) map[string][]string {
	out := map[string][]string{}
	for k, v := range h.All() {
		out[strings.ToLower(string(k))] = append(out[strings.ToLower(string(k))], string(v))
	}
	return out
}

func respHeaders(h *fasthttp.ResponseHeader) map[string][]string {
	out := map[string][]string{}
	for k, v := range h.All() {
		out[strings.ToLower(string(k))] = append(out[strings.ToLower(string(k))], string(v))
	}
	return out
}

func metaValues(m MetaMap) map[string][]string {
	out := map[string][]string{}
	for k, l := range m {
		out[k] = l.GetValues()
	}
	return out
}

func meta(kv map[string][]string) MetaMap {
	m := MetaMap{}
	for k, vs := range kv {
		m[k] = &internalv1pb.ListStringValue{Values: vs}
	}
	return m
}

// expectHeaders checks that got has exactly the wanted values for each
// wanted key and none of the absent keys.
func expectHeaders(t *testing.T, got map[string][]string, want map[string][]string, absent ...string) {
	t.Helper()
	for k, vs := range want {
		g := append([]string(nil), got[k]...)
		w := append([]string(nil), vs...)
		sort.Strings(g)
		sort.Strings(w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s = %q, want %q (all: %q)", k, got[k], vs, got)
		}
	}
	for _, k := range absent {
		if _, ok := got[k]; ok {
			t.Errorf("%s = %q, want it left out", k, got[k])
		}
	}
}

func TestHopHeader(t *testing.T) {
	hop := []string{"TE", "te", "Host", "Upgrade", "Trailer", "Connection", "keep-alive", "Content-Type",
		"Content-Length", "Proxy-Connection", "Transfer-Encoding", "Proxy-Authorization", "Proxy-Authenticate", "PROXY-AUTHENTICATE"}
	for _, h := range hop {
		if !HopHeader([]byte(h)) {
			t.Errorf("%s is hop-by-hop, HopHeader says no", h)
		}
	}
	for _, h := range []string{"", "X-Custom", "Accept", "Trailers-X", "Hosts", "Authorization", "Set-Cookie", "Proxy-Authenticat", "dapr-app-id"} {
		if HopHeader([]byte(h)) {
			t.Errorf("%s is not hop-by-hop, HopHeader says yes", h)
		}
	}
}

func TestIncomingToHeaders(t *testing.T) {
	md := metadata.MD{
		":authority":           {"localhost"},
		"content-type":         {"application/grpc"},
		"te":                   {"trailers"},
		"host":                 {"h"},
		"connection":           {"keep-alive"},
		"grpc-timeout":         {"1S"},
		"grpc-accept-encoding": {"gzip"},
		"grpc-trace-bin":       {"\x00\x01\x02"},
		"x-custom":             {"a", "b"},
		"auth-bin":             {"\xff\x00"},
		"dapr-caller-app-id":   {"caller"},
	}
	var h fasthttp.RequestHeader
	IncomingToHeaders(md, &h)
	expectHeaders(t, reqHeaders(&h), map[string][]string{
		"x-custom":           {"a", "b"},
		"grpc-trace-bin":     {b64("\x00\x01\x02")},
		"auth-bin":           {b64("\xff\x00")},
		"dapr-caller-app-id": {"caller"},
	}, ":authority", "te", "grpc-timeout", "grpc-accept-encoding", "connection")
	if ct := string(h.ContentType()); ct != "" {
		t.Errorf("content-type became a header: %q", ct)
	}
	if host := string(h.Host()); host != "" {
		t.Errorf("host became a header: %q", host)
	}
}

func TestOutgoingFromIncoming(t *testing.T) {
	in := metadata.MD{
		":authority":     {"x"},
		"content-type":   {"application/grpc"},
		"user-agent":     {"grpc-go/1"},
		"te":             {"trailers"},
		"grpc-timeout":   {"1S"},
		"grpc-encoding":  {"gzip"},
		"grpc-trace-bin": {"\x00"},
		"x-custom":       {"a", "b"},
		"auth-bin":       {"\xff"},
		"dapr-app-id":    {"orders"},
	}
	got := OutgoingFromIncoming(in)
	want := metadata.MD{"grpc-trace-bin": {"\x00"}, "x-custom": {"a", "b"}, "auth-bin": {"\xff"}, "dapr-app-id": {"orders"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(in) != 10 {
		t.Fatal("the incoming metadata was changed")
	}
}

func TestRequestHeadersToMeta(t *testing.T) {
	var req fasthttp.Request
	req.Header.SetHost("orders:3500")
	req.Header.SetContentType("application/json")
	req.SetBodyString("{}")
	req.Header.SetContentLength(2)
	req.Header.SetUserAgent("curl/8")
	req.Header.Add("X-Custom", "v1")
	req.Header.Add("X-Custom", "v2")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("TE", "trailers")
	req.Header.Set("Upgrade", "h2c")
	req.Header.Set("Proxy-Authorization", "Basic x")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Traceparent", "00-abc-def-01")
	req.Header.Set("Authorization", "Bearer t")
	m := MetaMap{}
	RequestHeadersToMeta(&req.Header, m)
	expectHeaders(t, metaValues(m), map[string][]string{
		"x-custom":      {"v1", "v2"},
		"user-agent":    {"curl/8"},
		"traceparent":   {"00-abc-def-01"},
		"authorization": {"Bearer t"},
	}, "host", "content-type", "content-length", "keep-alive", "te", "upgrade", "proxy-authorization", "proxy-connection")
	for k := range m {
		if k != strings.ToLower(k) {
			t.Errorf("key %q is not lower-case", k)
		}
	}
}

func TestResponseHeadersToMeta(t *testing.T) {
	var resp fasthttp.Response
	resp.Header.SetContentType("application/json")
	resp.Header.Set("Server", "app")
	resp.Header.Set("Date", "Mon, 01 Jan 2024 00:00:00 GMT")
	resp.Header.Set("X-Resp", "r")
	resp.Header.Add("Set-Cookie", "a=1")
	resp.Header.Set("Proxy-Authenticate", "Basic realm=x")
	resp.Header.Set("Keep-Alive", "timeout=5")
	resp.SetBodyString("{}")
	m := MetaMap{}
	ResponseHeadersToMeta(&resp.Header, m)
	expectHeaders(t, metaValues(m), map[string][]string{"x-resp": {"r"}},
		"content-type", "content-length", "server", "date", "proxy-authenticate", "keep-alive")
}

func TestMetaToRequestHeaders(t *testing.T) {
	m := meta(map[string][]string{
		"x-custom":           {"a", "b"},
		"X-Upper":            {"u"},
		"grpc-timeout":       {"1S"},
		":method":            {"POST"},
		":path":              {"/x"},
		":authority":         {"h"},
		":status":            {"200"},
		"content-type":       {"application/grpc"},
		"auth-bin":           {b64("\xff")},
		"destination-app-id": {"orders"},
		"grpc-trace-bin":     {"AAEC"},
		"empty":              {},
	})
	m["nil"] = nil
	var h fasthttp.RequestHeader
	MetaToRequestHeaders(m, &h)
	expectHeaders(t, reqHeaders(&h), map[string][]string{
		"x-custom":          {"a", "b"},
		"x-upper":           {"u"},
		"dapr-grpc-timeout": {"1S"},
		"dapr-method":       {"POST"},
		"dapr-path":         {"/x"},
		"dapr-authority":    {"h"},
		"grpc-trace-bin":    {"AAEC"},
	}, "grpc-timeout", ":status", "dapr-status", "auth-bin", "destination-app-id", "empty", "nil")
	if ct := string(h.ContentType()); ct != "" {
		t.Errorf("content-type from metadata: %q", ct)
	}
}

func TestMetaToResponseHeaders(t *testing.T) {
	m := meta(map[string][]string{
		"x-resp":            {"r1", "r2"},
		"grpc-status":       {"0"},
		"connection":        {"close"},
		"transfer-encoding": {"chunked"},
		"content-length":    {"10"},
		"content-type":      {"text/plain"},
		"keep-alive":        {"timeout=5"},
		"trace-bin":         {b64("\x01")},
	})
	var resp fasthttp.Response
	MetaToResponseHeaders(m, &resp.Header)
	got := respHeaders(&resp.Header)
	expectHeaders(t, got, map[string][]string{"x-resp": {"r1", "r2"}, "dapr-grpc-status": {"0"}},
		"grpc-status", "connection", "transfer-encoding", "keep-alive", "trace-bin")
	if resp.Header.ContentLength() == 10 {
		t.Error("content-length was taken from metadata")
	}
	if string(resp.Header.ContentType()) == "text/plain" {
		t.Error("content-type was taken from metadata")
	}
}

func TestResponseHeadersToMD(t *testing.T) {
	var resp fasthttp.Response
	resp.Header.SetContentType("application/json")
	resp.Header.Set("Cache-Control", "no-cache")
	resp.Header.Set("X-Resp", "r")
	resp.Header.Add("X-Multi", "1")
	resp.Header.Add("X-Multi", "2")
	resp.Header.Set("Server", "app")
	resp.Header.Set("Grpc-Status", "0")
	resp.Header.Set("TE", "trailers")
	md := ResponseHeadersToMD(&resp.Header)
	expectHeaders(t, md, map[string][]string{
		"dapr-content-type":  {"application/json"},
		"dapr-cache-control": {"no-cache"},
		"x-resp":             {"r"},
		"x-multi":            {"1", "2"},
	}, "content-type", "cache-control", "server", "dapr-server", "grpc-status", "te")
}

func TestMetaToMD(t *testing.T) {
	if MetaToMD(nil) != nil || MetaToMD(MetaMap{}) != nil {
		t.Fatal("empty metadata must give nil")
	}
	m := meta(map[string][]string{
		"X-Custom":     {"a", "b"},
		"trace-bin":    {b64("\x00\xff"), "not base64!"},
		":authority":   {"h"},
		"content-type": {"application/grpc"},
		"te":           {"trailers"},
	})
	m["nil"] = nil
	got := MetaToMD(m)
	want := metadata.MD{"x-custom": {"a", "b"}, "trace-bin": {"\x00\xff"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestMDToMetaRoundTrip(t *testing.T) {
	md := metadata.MD{"x-custom": {"a", "b"}, "token-bin": {"\x00\xfe\xff"}}
	m := MetaMap{}
	MDToMeta(md, m)
	if v := m["token-bin"].GetValues(); len(v) != 1 || v[0] != b64("\x00\xfe\xff") {
		t.Fatalf("binary value not base64: %q", v)
	}
	if back := MetaToMD(m); !reflect.DeepEqual(back, md) {
		t.Fatalf("round trip %q, want %q", back, md)
	}
	// AddMeta appends to an existing key.
	AddMeta(m, "x-custom", "c")
	if v := m["x-custom"].GetValues(); !reflect.DeepEqual(v, []string{"a", "b", "c"}) {
		t.Fatalf("AddMeta: %q", v)
	}
}

func BenchmarkRequestHeadersToMeta(b *testing.B) {
	var req fasthttp.Request
	req.Header.SetContentType("application/json")
	req.Header.Set("X-Custom", "v")
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	req.Header.SetUserAgent("bench")
	m := MetaMap{}
	b.ReportAllocs()
	for b.Loop() {
		clear(m)
		RequestHeadersToMeta(&req.Header, m)
	}
}

func BenchmarkMetaToRequestHeaders(b *testing.B) {
	m := meta(map[string][]string{
		"x-custom": {"v"}, "traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"dapr-caller-app-id": {"caller"}, ":authority": {"h"}, "grpc-trace-bin": {"AAEC"},
	})
	var h fasthttp.RequestHeader
	b.ReportAllocs()
	for b.Loop() {
		h.Reset()
		MetaToRequestHeaders(m, &h)
	}
}

func BenchmarkResponseHeadersToMD(b *testing.B) {
	var resp fasthttp.Response
	resp.Header.SetContentType("application/json")
	resp.Header.Set("X-Resp", "r")
	b.ReportAllocs()
	for b.Loop() {
		_ = ResponseHeadersToMD(&resp.Header)
	}
}

func BenchmarkIncomingToHeaders(b *testing.B) {
	md := metadata.MD{":authority": {"h"}, "content-type": {"application/grpc"}, "x-custom": {"v"}, "grpc-trace-bin": {"\x00\x01"}}
	var h fasthttp.RequestHeader
	b.ReportAllocs()
	for b.Loop() {
		h.Reset()
		IncomingToHeaders(md, &h)
	}
}
