package h2proxy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// TestEncCacheDecodes encodes random sequences of header blocks, in which
// fields repeat, change, are new or are never indexed, and checks that a
// decoder reads every block back as it was.
func TestEncCacheDecodes(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newConn(a, false)
	dec := hpack.NewDecoder(4096, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	kinds := [][]hpack.HeaderField{
		{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/echo.Echo/Echo"},
			{Name: ":authority", Value: "127.0.0.1:50051"}, {Name: "content-type", Value: "application/grpc"},
			{Name: "te", Value: "trailers"}, {Name: "dapr-app-id", Value: "app"}},
		{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}},
		{{Name: "grpc-status", Value: "0"}, {Name: "grpc-message", Value: ""}},
	}
	for i := 0; i < 5000; i++ {
		base := kinds[rng.IntN(len(kinds))]
		fields := append([]hpack.HeaderField(nil), base...)
		switch rng.IntN(6) {
		case 0: // a value that changes every time
			fields = append(fields, hpack.HeaderField{Name: "x-req", Value: fmt.Sprint(i)})
		case 1: // never indexed
			fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: fmt.Sprintf("%dm", i), Sensitive: true})
		case 2: // a field dropped
			fields = fields[:len(fields)-1]
		case 3: // a big value that evicts entries
			fields = append(fields, hpack.HeaderField{Name: "x-big", Value: string(make([]byte, 1000+rng.IntN(3000)))})
		}
		c.encodeLocked(fields)
		got, err := dec.DecodeFull(c.hbuf.Bytes())
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		for j := range got {
			got[j].Sensitive = fields[j].Sensitive // not part of what must match
		}
		if !reflect.DeepEqual(got, fields) {
			t.Fatalf("block %d: decoded %v, sent %v", i, got, fields)
		}
	}
}

// TestEncCacheHits: a block sent again costs one byte a field, including
// when another kind of block came in between.
func TestEncCacheHits(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newConn(a, false)
	req := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":path", Value: "/a.B/C"}, {Name: "x-app", Value: "orders"}}
	resp := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "x-answer", Value: "yes"}}
	for i := 0; i < 3; i++ {
		c.encodeLocked(req)
		c.encodeLocked(resp)
	}
	c.encodeLocked(req)
	if n := c.hbuf.Len(); n != len(req) {
		t.Fatalf("the repeated request took %d bytes, want %d", n, len(req))
	}
}

// benchReq is a gRPC request's header fields.
var benchReq = []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/echo.Echo/Echo"},
	{Name: ":authority", Value: "127.0.0.1:50051"}, {Name: "content-type", Value: "application/grpc"},
	{Name: "te", Value: "trailers"}, {Name: "user-agent", Value: "grpc-go/1.80.0"}, {Name: "dapr-app-id", Value: "app"}}

func benchEncode(b *testing.B, encode func(c *Conn)) {
	a, p := net.Pipe()
	defer a.Close()
	defer p.Close()
	c := newConn(a, false)
	b.ReportAllocs()
	for b.Loop() {
		encode(c)
	}
}

// BenchmarkEncode encodes a request's header fields, as sent again and again.
func BenchmarkEncode(b *testing.B) {
	benchEncode(b, func(c *Conn) { c.encodeLocked(benchReq) })
}

// BenchmarkEncodeHPACK is BenchmarkEncode with hpack.Encoder alone.
func BenchmarkEncodeHPACK(b *testing.B) {
	benchEncode(b, func(c *Conn) {
		c.hbuf.Reset()
		for _, f := range benchReq {
			_ = c.henc.WriteField(f)
		}
	})
}
