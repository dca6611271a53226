package h2proxy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
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

// TestDecCacheTableChanges sends a proxy random header blocks: fields that
// repeat (blocks of indexes and literals kept out of the table, which the
// decoding cache keeps), new
// fields that move every index, big ones that evict, blocks split over
// CONTINUATION frames, and byte-for-byte replays of earlier blocks that
// kept the table, which mean other fields once the table has moved. The proxy must
// read every block as a decoder that saw the same bytes does.
func TestDecCacheTableChanges(t *testing.T) {
	e := setup(t, func(*Pool) func(*Stream) {
		return func(st *Stream) { st.Fail(codes.PermissionDenied, xFields(st.Fields()), nil) }
	})
	r := dialRaw(t, e.proxyAddr, 4096)
	mirror := hpack.NewDecoder(4096, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	pseudo := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/"}}
	var indexed [][]byte         // blocks that kept the table, sent so far
	first := map[string]string{} // what each meant when first sent
	kept, replays, moved := 0, 0, 0
	for i, id := 0, uint32(1); i < 1500; i, id = i+1, id+2 {
		var block []byte
		split, replay := false, len(indexed) > 0 && rng.IntN(4) == 0
		if replay {
			// Mostly a recent block, which the cache may still hold.
			k := rng.IntN(len(indexed))
			if rng.IntN(4) > 0 {
				k = len(indexed) - 1 - rng.IntN(min(4, len(indexed)))
			}
			block = indexed[k]
		} else {
			fields := append([]hpack.HeaderField(nil), pseudo...)
			for _, n := range []string{"x-a", "x-b", "x-c", "x-d"} {
				if rng.IntN(3) > 0 {
					fields = append(fields, hpack.HeaderField{Name: n, Value: fmt.Sprint(rng.IntN(3))})
				}
			}
			if rng.IntN(40) == 0 {
				fields = append(fields, hpack.HeaderField{Name: "x-big", Value: strings.Repeat("v", 1000+rng.IntN(2000))})
			}
			if rng.IntN(4) == 0 { // a never-indexed literal
				fields = append(fields, hpack.HeaderField{Name: "x-s", Value: fmt.Sprint(rng.IntN(2)), Sensitive: true})
			}
			r.hb.Reset()
			for _, f := range fields {
				_ = r.enc.WriteField(f)
			}
			block = bytes.Clone(r.hb.Bytes())
			if rng.IntN(4) == 0 { // a literal without indexing, as nghttp2 sends :path
				v := fmt.Sprint(rng.IntN(2))
				block = append(block, 0x00, 3, 'x', '-', 'l', byte(len(v)))
				block = append(block, v...)
			}
			split = len(block) > 2 && rng.IntN(5) == 0
			if keepsTable(block) {
				indexed = append(indexed, block)
			}
		}
		want, err := mirror.DecodeFull(block)
		if err != nil && replay {
			// A replay of an index since evicted: such a block leaves
			// the table as it was, decodable or not.
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if replay {
			replays++
			if first[string(block)] != xFields(want) {
				moved++
			}
		} else if _, ok := first[string(block)]; !ok && keepsTable(block) {
			first[string(block)] = xFields(want)
		}
		if split {
			if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:2], EndStream: true}); err != nil {
				t.Fatal(err)
			}
			if err := r.fr.WriteContinuation(id, true, block[2:]); err != nil {
				t.Fatal(err)
			}
		} else if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if got := field(r.answer(id), "grpc-message"); got != xFields(want) {
			t.Fatalf("block %d (%x, split %v): the proxy read %q, a decoder %q", i, block, split, got, xFields(want))
		}
		if keepsTable(block) {
			kept++
		}
	}
	if replays < 100 || moved < 20 || kept < 300 {
		t.Fatalf("too few cases: %d replays (%d meaning other fields), %d blocks that kept the table", replays, moved, kept)
	}
	t.Logf("%d blocks that kept the table, %d replays, %d of them meaning other fields", kept, replays, moved)
}

// xFields lists the x- fields, "name=value,..." (a big value by its length).
func xFields(fields []hpack.HeaderField) string {
	var b strings.Builder
	for _, f := range fields {
		if strings.HasPrefix(f.Name, "x-") {
			v := f.Value
			if len(v) > 100 {
				v = fmt.Sprint(len(v))
			}
			fmt.Fprintf(&b, "%s=%s,", f.Name, v)
		}
	}
	return b.String()
}

// TestKeepsTable classifies header blocks by what their representations do
// to the dynamic table.
func TestKeepsTable(t *testing.T) {
	enc := func(fields ...hpack.HeaderField) []byte {
		var b bytes.Buffer
		e := hpack.NewEncoder(&b)
		for _, f := range fields {
			_ = e.WriteField(f)
		}
		return b.Bytes()
	}
	post := hpack.HeaderField{Name: ":method", Value: "POST"}
	for _, c := range []struct {
		name  string
		block []byte
		want  bool
	}{
		{"static indexes", enc(post, hpack.HeaderField{Name: ":status", Value: "200"}), true},
		{"added to the table", enc(post, hpack.HeaderField{Name: "x-a", Value: "1"}), false},
		{"never indexed", enc(post, hpack.HeaderField{Name: "x-a", Value: "1", Sensitive: true}), true},
		{"literal without indexing, indexed name", []byte{0x83, 0x04, 0x02, '/', 'x'}, true},
		{"literal without indexing, new name", []byte{0x00, 0x01, 'a', 0x01, 'b'}, true},
		{"index over 126", []byte{0xff, 0x05}, true},
		{"table size update", []byte{0x3f, 0xe1, 0x1f, 0x83}, false},
		{"string longer than the block", []byte{0x04, 0x05, '/'}, false},
		{"integer cut short", []byte{0xff, 0x80}, false},
		{"empty", nil, false},
		{"too long", enc(hpack.HeaderField{Name: "x-a", Value: strings.Repeat("v", 2*maxCachedBlock), Sensitive: true}), false},
		{"as long as may be", enc(hpack.HeaderField{Name: "x-a", Value: strings.Repeat("v", maxCachedBlock-10), Sensitive: true}), true},
	} {
		if got := keepsTable(c.block); got != c.want {
			t.Errorf("%s (%x): %v, want %v", c.name, c.block, got, c.want)
		}
	}
}

// BenchmarkHeaderBlock reads a gRPC request's header block as nghttp2
// sends it once the table holds its fields (indexes, and :path as a literal
// not added to the table): decoded by HPACK, or found in the cache.
func BenchmarkHeaderBlock(b *testing.B) {
	for _, cached := range []bool{false, true} {
		b.Run(map[bool]string{false: "hpack", true: "cache"}[cached], func(b *testing.B) {
			a, p := net.Pipe()
			defer a.Close()
			defer p.Close()
			c := newConn(a, false)
			var buf bytes.Buffer
			fr := http2.NewFramer(&buf, &buf)
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			fields := []hpack.HeaderField{{Name: ":authority", Value: "127.0.0.1:50001"},
				{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
				{Name: "dapr-app-id", Value: "app"}, {Name: "user-agent", Value: "h2load nghttp2/1.52.0"}}
			for _, f := range fields {
				_ = enc.WriteField(f) // into the table: the first block
			}
			first := bytes.Clone(hb.Bytes())
			hb.Reset()
			hb.Write([]byte{0x83, 0x86, 0x04, 15})
			hb.WriteString("/echo.Echo/Echo")
			for _, f := range fields {
				_ = enc.WriteField(f) // now indexes
			}
			for _, blk := range [][]byte{first, hb.Bytes()} {
				if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndHeaders: true}); err != nil {
					b.Fatal(err)
				}
			}
			for range 2 {
				f, err := fr.ReadFrame()
				if err != nil {
					b.Fatal(err)
				}
				if err := c.handle(f); err != nil {
					b.Fatal(err)
				}
			}
			if len(c.hfields) != 8 {
				b.Fatalf("%d fields", len(c.hfields))
			}
			// The steady block stays in the framer's buffer: read it once
			// more and hand it in again and again.
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
				b.Fatal(err)
			}
			f, err := fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if !cached {
					c.dcache.epoch++
				}
				if err := c.handle(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
