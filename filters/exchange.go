// Package filters is switchyard's public filter API: the protocol-neutral
// Exchange every listener produces, the Handler/Filter/Factory interfaces,
// the filter registry and chain building. Plug-in authors import this package.
package filters

import (
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Kind is what a request asks for, derived from its logical route.
type Kind uint8

const (
	KindUnknown Kind = iota
	KindInvoke       // /invoke/<app-id>/method/<method>
	KindPublish      // /publish/<pubsub>/<topic>
	KindDeliver      // /deliver/<pubsub>/<topic>: a broker message on its way to the app
)

func (k Kind) String() string {
	switch k {
	case KindInvoke:
		return "invoke"
	case KindPublish:
		return "publish"
	case KindDeliver:
		return "deliver"
	}
	return "unknown"
}

// Protocol is the wire protocol the exchange arrived on.
type Protocol uint8

const (
	ProtocolHTTP         Protocol = iota // Dapr HTTP API (fasthttp)
	ProtocolGRPC                         // Dapr gRPC API
	ProtocolInternal                     // sidecar-to-sidecar internal gRPC
	ProtocolSubscription                 // a broker subscription
)

func (p Protocol) String() string {
	switch p {
	case ProtocolHTTP:
		return "http"
	case ProtocolGRPC:
		return "grpc"
	case ProtocolInternal:
		return "internal"
	case ProtocolSubscription:
		return "subscription"
	}
	return "unknown"
}

// Exchange is one request and the response being built for it. Listeners
// decode whatever arrives into an Exchange; filters and clusters see only the
// Exchange. Dapr's invocation model has HTTP semantics (verb, path, query,
// headers, body, status) whatever the transport, so the request and response
// are fasthttp values: the HTTP listener hands over its own (no copy), the
// gRPC listeners fill pooled ones.
//
// An Exchange is pooled and valid only while Handle runs, like fasthttp's
// RequestCtx: copy anything that must outlive the call.
type Exchange struct {
	Protocol Protocol
	Listener string // name of the listener that accepted the request

	// The logical route. Key is "/invoke/<id>/method/<m>", "/publish/<ps>/<topic>"
	// or "/deliver/<ps>/<topic>"; the other slices point into Key.
	Kind   Kind
	Key    []byte
	AppID  []byte // invoke: target app id
	Method []byte // invoke: method, may contain '/'; deliver: the app's route path
	PubSub []byte // publish, deliver: component name
	Topic  []byte // publish, deliver: topic, may contain '/'
	Bulk   bool   // publish: the body is a bulk publish request

	// Req is the request: verb, headers (lower- or canonical-case names), query
	// string in its URI, body. Its URI path is the listener's, not the app's:
	// clusters rewrite it. Resp is the response being built.
	Req  *fasthttp.Request
	Resp *fasthttp.Response

	// Stream is set, and Req's body is empty, when the request is a stream
	// (gRPC proxying). A cluster that cannot stream answers ErrStreamUnsupported.
	Stream Stream

	// Caller is the identity of the caller: its app id (from the
	// dapr-caller-app-id set by the calling sidecar) and its SPIFFE id when
	// mTLS proved one.
	CallerAppID     []byte
	CallerNamespace []byte
	PeerID          []byte
	RemoteAddr      []byte // the client's IP, for X-Forwarded-For

	// Set by the router: the route that matched (nil for a default route), its
	// timeout (0: none) and whether a retry may repeat a request the upstream
	// may have seen.
	Route      *RouteInfo
	Timeout    time.Duration
	Idempotent bool

	// Scratch space for listeners and clusters that want a reusable buffer.
	Scratch []byte

	keyBuf   []byte
	addrBuf  []byte
	callBuf  []byte // CallerAppID and CallerNamespace, when SetCaller copied them
	ownsReq  bool
	values   []value
	released bool
}

// RouteInfo is what the router tells upstream filters and clusters about the
// configured route that matched.
type RouteInfo struct {
	Name       string
	Timeout    time.Duration
	Idempotent bool
}

// Stream is a bidirectional message stream (gRPC proxying). The listener and
// the cluster each hold one side; messages are raw frames.
type Stream interface {
	// Method is the full gRPC method, "/pkg.Service/Method".
	FullMethod() string
	// Native returns the transport's own stream (grpc.ServerStream) for a
	// cluster of the same transport.
	Native() any
}

type value struct {
	key any
	val any
}

var exchangePool = sync.Pool{New: func() any { return new(Exchange) }}

// AcquireExchange returns an empty Exchange from the pool. When owned is true
// it also carries a pooled request and response, released with it.
func AcquireExchange(owned bool) *Exchange {
	ex := exchangePool.Get().(*Exchange)
	ex.released = false
	if owned {
		ex.Req = fasthttp.AcquireRequest()
		ex.Resp = fasthttp.AcquireResponse()
		ex.ownsReq = true
	}
	return ex
}

// ReleaseExchange returns ex to the pool. ex must not be used afterwards.
func ReleaseExchange(ex *Exchange) {
	if ex.released {
		panic("filters: exchange released twice")
	}
	if ex.ownsReq {
		fasthttp.ReleaseRequest(ex.Req)
		fasthttp.ReleaseResponse(ex.Resp)
	}
	ex.reset()
	ex.released = true
	exchangePool.Put(ex)
}

func (ex *Exchange) reset() {
	keyBuf, addrBuf, callBuf := ex.keyBuf[:0], ex.addrBuf[:0], ex.callBuf[:0]
	scratch := ex.Scratch[:0]
	vals := ex.values[:0]
	for i := range ex.values {
		ex.values[i] = value{}
	}
	*ex = Exchange{keyBuf: keyBuf, addrBuf: addrBuf, callBuf: callBuf, Scratch: scratch, values: vals}
}

// SetCaller sets CallerAppID and CallerNamespace to copies of appID and
// namespace, kept in a buffer of the exchange's own (reused from one
// exchange to the next): for values that live in buffers the chain may
// change, such as the request's headers. Empty ones are left nil.
func (ex *Exchange) SetCaller(appID, namespace []byte) {
	b := append(append(ex.callBuf[:0], appID...), namespace...)
	ex.callBuf = b
	ex.CallerAppID, ex.CallerNamespace = nil, nil
	if len(appID) > 0 {
		ex.CallerAppID = b[:len(appID):len(appID)]
	}
	if len(namespace) > 0 {
		ex.CallerNamespace = b[len(appID):len(b):len(b)]
	}
}

// SetValue attaches a per-exchange value for later filters (like
// context.WithValue, without the allocation of a new context).
func (ex *Exchange) SetValue(key, val any) {
	for i := range ex.values {
		if ex.values[i].key == key {
			ex.values[i].val = val
			return
		}
	}
	ex.values = append(ex.values, value{key, val})
}

// Value returns what SetValue attached for key, or nil.
func (ex *Exchange) Value(key any) any {
	for i := range ex.values {
		if ex.values[i].key == key {
			return ex.values[i].val
		}
	}
	return nil
}

// SetRemoteAddr sets RemoteAddr to the text form of ip, without allocating
// once the exchange has been used.
func (ex *Exchange) SetRemoteAddr(ip netip.Addr) {
	if !ip.IsValid() {
		ex.RemoteAddr = nil
		return
	}
	ex.addrBuf = ip.Unmap().AppendTo(ex.addrBuf[:0])
	ex.RemoteAddr = ex.addrBuf
}

// SetInvoke sets the logical route to /invoke/<appID>/method/<method>.
func (ex *Exchange) SetInvoke(appID, method []byte) {
	b := append(ex.keyBuf[:0], "/invoke/"...)
	b = append(b, appID...)
	b = append(b, "/method/"...)
	b = append(b, method...)
	ex.keyBuf = b
	ex.Kind = KindInvoke
	ex.Key = b
	ex.AppID = b[len("/invoke/") : len("/invoke/")+len(appID)]
	ex.Method = b[len(b)-len(method):]
	ex.PubSub, ex.Topic = nil, nil
}

// SetPublish sets the logical route to /publish/<pubsub>/<topic>, or
// /deliver/<pubsub>/<topic> when deliver is true.
func (ex *Exchange) SetPublish(deliver bool, pubsub, topic []byte) {
	prefix := "/publish/"
	ex.Kind = KindPublish
	if deliver {
		prefix = "/deliver/"
		ex.Kind = KindDeliver
	}
	b := append(ex.keyBuf[:0], prefix...)
	b = append(b, pubsub...)
	b = append(b, '/')
	b = append(b, topic...)
	ex.keyBuf = b
	ex.Key = b
	ex.PubSub = b[len(prefix) : len(prefix)+len(pubsub)]
	ex.Topic = b[len(b)-len(topic):]
	ex.AppID, ex.Method = nil, nil
}
