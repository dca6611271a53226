package grpcwire

import (
	"bytes"
	"encoding/base64"
	"strings"

	internalv1pb "github.com/dapr/dapr/pkg/proto/internals/v1"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/metadata"
)

// Metadata and header names daprd sets or reads.
const (
	MDAppID     = "dapr-app-id"
	MDCallerID  = "dapr-caller-app-id"
	MDCallerNS  = "dapr-caller-namespace"
	MDCalleeID  = "dapr-callee-app-id"
	MDTraceBin  = "grpc-trace-bin"
	daprPrefix  = "dapr-"
	binSuffix   = "-bin"
	contentType = "content-type"
)

// skipRequestMetadata reports gRPC metadata that does not become an HTTP
// request header: pseudo headers, gRPC's reserved ones (except the trace
// context) and what HTTP/2 forbids.
func skipRequestMetadata(k string) bool {
	if k == "" || k[0] == ':' {
		return true
	}
	switch k {
	case contentType, "te", "content-length", "connection", "host", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection":
		return true
	case MDTraceBin:
		return false
	}
	return strings.HasPrefix(k, "grpc-")
}

// IncomingToHeaders copies incoming gRPC metadata into HTTP request
// headers, as daprd maps metadata to headers: binary ("-bin") values are
// base64-encoded, pseudo and reserved gRPC keys are left out.
func IncomingToHeaders(md metadata.MD, h *fasthttp.RequestHeader) {
	for k, vs := range md {
		if skipRequestMetadata(k) {
			continue
		}
		bin := strings.HasSuffix(k, binSuffix)
		for _, v := range vs {
			if bin {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			h.Add(k, v)
		}
	}
}

// OutgoingFromIncoming returns the metadata to send upstream for a proxied
// call: the caller's metadata without pseudo and reserved keys (the
// deadline travels in the context).
func OutgoingFromIncoming(md metadata.MD) metadata.MD {
	out := make(metadata.MD, len(md)+2)
	for k, vs := range md {
		if k == "" || k[0] == ':' || k == contentType || k == "user-agent" || k == "te" ||
			(strings.HasPrefix(k, "grpc-") && k != MDTraceBin) {
			continue
		}
		out[k] = vs
	}
	return out
}

// HopHeader reports headers that never cross a hop, with Host and
// Content-Type/-Length (which travel apart from the metadata).
func HopHeader(k []byte) bool {
	switch len(k) {
	case 2:
		return EqFold(k, "te")
	case 4:
		return EqFold(k, "host")
	case 7:
		return EqFold(k, "upgrade") || EqFold(k, "trailer")
	case 10:
		return EqFold(k, "connection") || EqFold(k, "keep-alive")
	case 12:
		return EqFold(k, "content-type")
	case 14:
		return EqFold(k, "content-length")
	case 16:
		return EqFold(k, "proxy-connection")
	case 17:
		return EqFold(k, "transfer-encoding")
	case 18:
		return EqFold(k, "proxy-authenticate")
	case 19:
		return EqFold(k, "proxy-authorization")
	}
	return false
}

// EqFold reports whether b equals the lower-case s, ignoring ASCII case.
func EqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// lower returns k lower-cased, reusing the string when it already is.
func lower(k []byte) string {
	for _, c := range k {
		if 'A' <= c && c <= 'Z' {
			return strings.ToLower(string(k))
		}
	}
	return string(k)
}

// MetaMap is the internal API's header map, reused across requests.
type MetaMap = map[string]*internalv1pb.ListStringValue

// AddMeta appends v under k in m.
func AddMeta(m MetaMap, k, v string) {
	if l, ok := m[k]; ok {
		l.Values = append(l.Values, v)
		return
	}
	m[k] = &internalv1pb.ListStringValue{Values: []string{v}}
}

// RequestHeadersToMeta copies request headers into m (lower-case keys),
// leaving out hop-by-hop headers, Host, Content-Length and Content-Type
// (which travels in the message).
func RequestHeadersToMeta(h *fasthttp.RequestHeader, m MetaMap) {
	listed := connectionListed(h.Peek("Connection"))
	for k, v := range h.All() {
		if HopHeader(k) || (listed != nil && inList(listed, k)) {
			continue
		}
		AddMeta(m, lower(k), string(v))
	}
}

// connectionListed returns the header names a Connection header lists
// (hop-by-hop too), nil for none or just close/keep-alive. The names point
// into conn.
func connectionListed(conn []byte) [][]byte {
	if len(conn) == 0 || EqFold(conn, "close") || EqFold(conn, "keep-alive") {
		return nil
	}
	var names [][]byte
	for _, n := range bytes.Split(conn, []byte(",")) {
		if n = bytes.TrimSpace(n); len(n) > 0 {
			names = append(names, n)
		}
	}
	return names
}

// HopByHopNames are the hop-by-hop headers an HTTP hop removes.
var HopByHopNames = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// HopByHop reports whether k is one of HopByHopNames, in any case. Unlike
// HopHeader it leaves Host and Content-Type/-Length, which fasthttp keeps
// as fields of its own, to the caller.
func HopByHop(k []byte) bool {
	return HopHeader(k) && !EqFold(k, "host") && !EqFold(k, "content-type") && !EqFold(k, "content-length")
}

// DropConnectionListed deletes the headers h's Connection header names.
func DropConnectionListed(h interface {
	Peek(string) []byte
	DelBytes([]byte)
}) {
	conn := h.Peek("Connection")
	if len(conn) == 0 {
		return
	}
	// A copy: deleting headers moves the values the names point into.
	for _, n := range connectionListed(append([]byte(nil), conn...)) {
		h.DelBytes(n)
	}
}

// DeleteHopByHop deletes the hop-by-hop headers of a request and the ones
// its Connection header names.
func DeleteHopByHop(h *fasthttp.RequestHeader) {
	DropConnectionListed(h)
	for _, k := range HopByHopNames {
		h.Del(k)
	}
	h.ResetConnectionClose()
}

// DropHopByHop is DeleteHopByHop after one pass that finds whether there
// is anything to delete: nearly always nothing, and then it costs no
// deletion (each one normalizes a name and scans the headers).
func DropHopByHop(h *fasthttp.RequestHeader) {
	for k := range h.All() {
		if HopByHop(k) {
			DeleteHopByHop(h)
			return
		}
	}
	h.ResetConnectionClose()
}

func inList(names [][]byte, k []byte) bool {
	for _, n := range names {
		if bytes.EqualFold(n, k) {
			return true
		}
	}
	return false
}

// ResponseHeadersToMeta copies response headers into m, as daprd's HTTP
// app channel does, without hop-by-hop headers and Content-Type/-Length.
func ResponseHeadersToMeta(h *fasthttp.ResponseHeader, m MetaMap) {
	for k, v := range h.All() {
		if HopHeader(k) || EqFold(k, "server") || EqFold(k, "date") || (len(k) > 11 && EqFold(k[:11], "switchyard-")) {
			continue // (switchyard-*: the peer link's own, see internal/peerhttp)
		}
		AddMeta(m, lower(k), string(v))
	}
}

// metaHeaderName is daprd's name for a metadata key as an HTTP header:
// reserved gRPC names get the dapr- prefix; binary keys and content-type are
// left out ("").
func metaHeaderName(k string) string {
	k = strings.ToLower(k)
	switch {
	case k == "" || k == contentType || strings.HasSuffix(k, binSuffix) || k == "destination-app-id":
		return ""
	case k == ":method", k == ":scheme", k == ":path", k == ":authority":
		return daprPrefix + k[1:]
	case k[0] == ':':
		return ""
	case strings.HasPrefix(k, "grpc-"):
		return daprPrefix + k
	}
	return k
}

// MetaToRequestHeaders sets request headers from the internal API's
// metadata, as daprd's callee does for an HTTP app.
func MetaToRequestHeaders(m MetaMap, h *fasthttp.RequestHeader) {
	for k, l := range m {
		if l == nil || len(l.Values) == 0 {
			continue
		}
		name := k
		if k == MDTraceBin {
			// Keep the binary trace context (base64) for the tracing filter.
			h.Set(k, l.Values[0])
			continue
		}
		if name = metaHeaderName(k); name == "" {
			continue
		}
		for _, v := range l.Values {
			h.Add(name, v)
		}
	}
}

// MetaToResponseHeaders sets response headers from the internal API's
// metadata (the callee app's response headers).
func MetaToResponseHeaders(m MetaMap, h *fasthttp.ResponseHeader) {
	for k, l := range m {
		if l == nil || len(l.Values) == 0 {
			continue
		}
		name := metaHeaderName(k)
		if name == "" || HopHeader([]byte(name)) {
			continue
		}
		for _, v := range l.Values {
			h.Add(name, v)
		}
	}
}

// permanentHTTPHeader reports the IANA permanent headers that daprd renames
// dapr-<name> when it turns HTTP response headers into gRPC metadata.
func permanentHTTPHeader(k string) bool {
	switch k {
	case "accept", "accept-charset", "accept-language", "accept-ranges", "connection", "keep-alive",
		"proxy-connection", "transfer-encoding", "upgrade", "cache-control", "content-type",
		"content-length", "cookie", "date", "expect", "from", "host", "if-match",
		"if-modified-since", "if-none-match", "if-schedule-tag-match", "if-unmodified-since",
		"max-forwards", "origin", "pragma", "referer", "via", "warning":
		return true
	}
	return false
}

// ResponseHeadersToMD turns the response headers of an invocation into the
// gRPC header metadata of InvokeService, as daprd does: lower-case keys,
// permanent HTTP headers prefixed with dapr-.
func ResponseHeadersToMD(h *fasthttp.ResponseHeader) metadata.MD {
	var md metadata.MD
	for k, v := range h.All() {
		key := lower(k)
		if key == "server" {
			continue
		}
		if permanentHTTPHeader(key) {
			key = daprPrefix + key
		} else if strings.HasPrefix(key, "grpc-") || key == "te" {
			continue
		}
		if md == nil {
			md = make(metadata.MD, 4)
		}
		md[key] = append(md[key], string(v))
	}
	return md
}

// MetaToMD converts the internal API's metadata to gRPC metadata, decoding
// base64 binary values.
func MetaToMD(m MetaMap) metadata.MD {
	if len(m) == 0 {
		return nil
	}
	md := make(metadata.MD, len(m))
	for k, l := range m {
		if l == nil {
			continue
		}
		k = strings.ToLower(k)
		if k == "" || k[0] == ':' || k == contentType || k == "te" {
			continue
		}
		if strings.HasSuffix(k, binSuffix) {
			for _, v := range l.Values {
				if d, err := base64.StdEncoding.DecodeString(v); err == nil {
					md[k] = append(md[k], string(d))
				}
			}
			continue
		}
		md[k] = append(md[k], l.Values...)
	}
	return md
}

// MDToMeta converts gRPC metadata to the internal API's metadata, encoding
// binary values in base64.
func MDToMeta(md metadata.MD, m MetaMap) {
	for k, vs := range md {
		if strings.HasSuffix(k, binSuffix) {
			for _, v := range vs {
				AddMeta(m, k, base64.StdEncoding.EncodeToString([]byte(v)))
			}
			continue
		}
		for _, v := range vs {
			AddMeta(m, k, v)
		}
	}
}

// FieldToHeader adds one HTTP/2 header field of a gRPC call to HTTP
// request headers as IncomingToHeaders maps metadata: pseudo and reserved
// fields are left out, and a binary ("-bin") value, unpadded base64 on the
// wire, becomes padded base64.
func FieldToHeader(name, value string, h *fasthttp.RequestHeader) {
	if skipRequestMetadata(name) {
		return
	}
	if strings.HasSuffix(name, binSuffix) {
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(value, "="))
		if err != nil {
			return
		}
		value = base64.StdEncoding.EncodeToString(b)
	}
	h.Add(name, value)
}
