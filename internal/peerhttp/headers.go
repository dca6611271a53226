package peerhttp

import (
	"bytes"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
)

// The header rules below give the callee's app and the caller's client the
// same headers as the gRPC internal API does (metadata keys are mapped the
// way daprd maps them): hop-by-hop headers never cross, binary ("-bin")
// values other than grpc-trace-bin are left out, grpc-* names become
// dapr-grpc-*, and destination-app-id is dropped.

// change is what the rules do to one header name.
type change uint8

const (
	keep change = iota
	drop
	prefix // becomes dapr-<name>
)

func rule(k []byte, response bool) change {
	switch {
	case grpcwire.HopByHop(k):
		return drop
	case response && (eqFold(k, "server") || eqFold(k, "date")):
		return drop
	case len(k) > 4 && eqFold(k[len(k)-4:], "-bin") && !eqFold(k, "grpc-trace-bin"):
		return drop
	case eqFold(k, "destination-app-id"):
		return drop
	case len(k) > 5 && eqFold(k[:5], "grpc-") && !eqFold(k, "grpc-trace-bin"):
		return prefix
	case response && len(k) > 11 && eqFold(k[:11], "switchyard-"):
		return drop // an app's header that the caller would take for the link's
	}
	return keep
}

var eqFold = grpcwire.EqFold

// edit is one header the rules change: its name, and the value to add back
// under dapr-<name> (nil: dropped).
type edit [2][]byte

// edits collects what a header block needs; the names and values are
// copied into arena, reused from one block to the next (the header's own
// bytes move as headers are deleted).
type edits struct {
	list  []edit
	arena []byte
}

var editsPool = sync.Pool{New: func() any { return new(edits) }}

// copyIn copies b, joined, into the arena.
func (t *edits) copyIn(b ...[]byte) []byte {
	start := len(t.arena)
	for _, p := range b {
		t.arena = append(t.arena, p...)
	}
	return t.arena[start:len(t.arena):len(t.arena)]
}

// note records the edit k needs, if any. Headers that need none (nearly
// all) cost nothing; t is taken from the pool at the first that does.
func note(t *edits, k, v []byte, response bool) *edits {
	c := rule(k, response)
	if c == keep {
		return t
	}
	if t == nil {
		t = editsPool.Get().(*edits)
	}
	e := edit{t.copyIn(k), nil}
	if c == prefix {
		e[1] = t.copyIn(v)
	}
	t.list = append(t.list, e)
	return t
}

var daprPrefix = []byte("dapr-")

// carryOut applies the edits to h and gives t back.
func carryOut(h interface {
	DelBytes([]byte)
	AddBytesKV([]byte, []byte)
}, t *edits) {
	if t == nil {
		return
	}
	for _, e := range t.list {
		h.DelBytes(e[0])
	}
	for _, e := range t.list {
		if e[1] != nil {
			h.AddBytesKV(t.copyIn(daprPrefix, e[0]), e[1])
		}
	}
	if cap(t.arena) > 64<<10 {
		return // a large value's copy is not kept
	}
	clear(t.list)
	t.list, t.arena = t.list[:0], t.arena[:0]
	editsPool.Put(t)
}

var (
	linkV    = []byte(Version)
	linkK    = []byte(HeaderLink)
	timeoutK = []byte(HeaderTimeout)
)

// PrepareRequest makes the caller's request headers ready for the link:
// hop-by-hop headers out, the link marker in. Host is the client's to set.
func PrepareRequest(h *fasthttp.RequestHeader) {
	grpcwire.DropHopByHop(h)
	h.SetBytesKV(linkK, linkV)
}

// IsLinkRequest reports whether h carries the link marker.
func IsLinkRequest(h *fasthttp.RequestHeader) bool {
	return bytes.Equal(h.PeekBytes(linkK), linkV)
}

// CleanRequest applies the rules to a request the callee received: what
// remains is what the gRPC internal API would have delivered. Host goes too.
func CleanRequest(h *fasthttp.RequestHeader) {
	h.DelBytes(linkK)
	h.DelBytes(timeoutK)
	var todo *edits
	for k, v := range h.All() {
		todo = note(todo, k, v, false)
	}
	carryOut(h, todo)
	h.SetHostBytes(nil)
	h.ResetConnectionClose()
}

// CleanResponse applies the rules to the app's response before the callee
// sends it back, and marks it as the link's.
func CleanResponse(h *fasthttp.ResponseHeader) {
	grpcwire.DropConnectionListed(h)
	var todo *edits
	for k, v := range h.All() {
		todo = note(todo, k, v, true)
	}
	carryOut(h, todo)
	h.ResetConnectionClose()
	h.SetBytesKV(linkK, linkV)
}

// IsLinkResponse reports whether h carries the link marker, and removes it
// and the Date the callee's server adds (the app's own Date does not cross,
// as over gRPC).
func IsLinkResponse(h *fasthttp.ResponseHeader) bool {
	ok := bytes.Equal(h.PeekBytes(linkK), linkV)
	h.DelBytes(linkK)
	h.DelBytes(dateK)
	return ok
}

var dateK = []byte("Date")

// DropLinkHeaders removes what PrepareRequest and the caller added for the
// link from a request that goes over gRPC after all.
func DropLinkHeaders(h *fasthttp.RequestHeader) {
	h.DelBytes(linkK)
	h.DelBytes(timeoutK)
}
