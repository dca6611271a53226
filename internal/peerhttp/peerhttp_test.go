package peerhttp

import (
	"testing"

	"github.com/valyala/fasthttp"
)

func TestPathRoundTrip(t *testing.T) {
	for _, m := range []string{"orders/new", "/lead", "a b?c#d%e", "ü/é\x00\x7f", "", "x/%2F/y", `q"<>\^{|}` + "`"} {
		p := AppendPath(nil, []byte(m))
		for _, c := range p {
			if c <= ' ' || c >= 0x7f || c == '?' || c == '#' {
				t.Fatalf("%q: path %q has %q", m, p, c)
			}
		}
		got, ok := AppendMethod(nil, p)
		want := m
		if len(want) > 0 && want[0] == '/' {
			want = want[1:]
		}
		if !ok || string(got) != want {
			t.Errorf("%q -> %q -> %q (ok %v)", m, p, got, ok)
		}
	}
	for _, bad := range []string{"/a%", "/a%4", "/a%zz"} {
		if _, ok := AppendMethod(nil, []byte(bad)); ok {
			t.Errorf("%q: want malformed", bad)
		}
	}
}

func TestHeaderRules(t *testing.T) {
	var h fasthttp.RequestHeader
	h.Set("Connection", "X-Listed")
	h.Set("X-Listed", "1")
	h.Set("Te", "trailers")
	h.Set("X-Keep", "k")
	PrepareRequest(&h)
	if len(h.Peek("X-Listed")) > 0 || len(h.Peek("Te")) > 0 || string(h.Peek("X-Keep")) != "k" || !IsLinkRequest(&h) {
		t.Fatalf("prepared: %s", h.Header())
	}
	h.Set("Grpc-Timeout", "1S")
	h.Set("Auth-Bin", "AA==")
	h.Set("Grpc-Trace-Bin", "AAEC")
	h.Set("Destination-App-Id", "x")
	CleanRequest(&h)
	if IsLinkRequest(&h) || string(h.Peek("Dapr-Grpc-Timeout")) != "1S" || len(h.Peek("Grpc-Timeout")) > 0 ||
		len(h.Peek("Auth-Bin")) > 0 || string(h.Peek("Grpc-Trace-Bin")) != "AAEC" || len(h.Peek("Destination-App-Id")) > 0 ||
		string(h.Peek("X-Keep")) != "k" {
		t.Fatalf("cleaned: %s", h.Header())
	}

	var r fasthttp.ResponseHeader
	r.Set("Server", "app")
	r.Set("Switchyard-Error", "ERR_X")
	r.Set("X-Out", "o")
	CleanResponse(&r)
	if len(r.Peek("Server")) > 0 || len(r.Peek("Switchyard-Error")) > 0 || string(r.Peek("X-Out")) != "o" {
		t.Fatalf("cleaned response: %s", r.Header())
	}
	if !IsLinkResponse(&r) || IsLinkResponse(&r) {
		t.Fatal("the marker is seen once, then removed")
	}
}

func BenchmarkCleanRequest(b *testing.B) {
	var h fasthttp.RequestHeader
	h.Set("Content-Type", "application/json")
	h.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	h.Set("Dapr-Caller-App-Id", "checkout")
	h.Set("X-Custom", "a")
	b.ReportAllocs()
	for b.Loop() {
		h.Set("Switchyard-Link", "1")
		CleanRequest(&h)
	}
}

// BenchmarkCleanResponse: an app's answer as fasthttp's server writes it
// (Date and Server included), cleaned for the link.
func BenchmarkCleanResponse(b *testing.B) {
	b.ReportAllocs()
	var h fasthttp.ResponseHeader
	for b.Loop() {
		h.Reset()
		h.SetContentType("text/plain")
		h.SetServer("app")
		h.Set("Date", "Sun, 22 Nov 2026 06:00:00 GMT")
		h.Set("X-Custom", "a")
		CleanResponse(&h)
	}
}
