// Package peerhttp is the wire form of an invocation between two switchyard
// sidecars over HTTP/1.1 on the internal port, beside the gRPC internal API
// every Dapr peer speaks. A sidecar offers it in the header metadata of its
// CallLocal answers (MDOffer); a caller that saw the offer sends later unary
// invocations of that endpoint as plain HTTP/1.1 requests:
//
//	<verb> /<method, percent-encoded where needed>?<query> HTTP/1.1
//	Switchyard-Link: 1
//	dapr-caller-app-id / dapr-callee-app-id / dapr-caller-namespace
//	Switchyard-Timeout: <microseconds>   (when the caller has a deadline)
//	... the caller's headers, content type and body as they are
//
// The callee answers with the app's status, headers and body and
// Switchyard-Link: 1. When its own chain fails (ACL, app down, ...) it
// answers with the Dapr error instead: the error code in Switchyard-Error,
// the gRPC code in Switchyard-Grpc-Code, the message as the body. A gRPC
// app's trailers travel as Switchyard-Trailer-<key> headers.
package peerhttp

// Header names of the link.
const (
	HeaderLink     = "Switchyard-Link"
	HeaderError    = "Switchyard-Error"
	HeaderGRPCCode = "Switchyard-Grpc-Code"
	TrailerPrefix  = "Switchyard-Trailer-"
	// HeaderTimeout is how long the caller still waits for the answer, in
	// microseconds: the callee's chain gets it as its context's deadline,
	// as the grpc-timeout of a CallLocal does.
	HeaderTimeout = "Switchyard-Timeout"
	// MDOffer is the gRPC header metadata with which a sidecar's CallLocal
	// answer offers the HTTP/1.1 form (value Version).
	MDOffer = "switchyard-internal-http"
	Version = "1"
)

// AppendPath appends "/" and method to buf, percent-encoding the bytes that
// cannot stand in a request path as they are ('?', '#', '%', spaces,
// controls and non-ASCII).
func AppendPath(buf, method []byte) []byte {
	buf = append(buf, '/')
	if len(method) > 0 && method[0] == '/' {
		method = method[1:]
	}
	for i := 0; i < len(method); i++ {
		c := method[i]
		if c <= ' ' || c >= 0x7f || c == '?' || c == '#' || c == '%' || c == '"' || c == '<' || c == '>' || c == '\\' || c == '^' || c == '`' || c == '{' || c == '|' || c == '}' {
			buf = append(buf, '%', hex[c>>4], hex[c&15])
			continue
		}
		buf = append(buf, c)
	}
	return buf
}

const hex = "0123456789ABCDEF"

// AppendMethod appends the method that path (as AppendPath wrote it, with
// its leading '/') names to buf; ok is false for a malformed escape.
func AppendMethod(buf, path []byte) (_ []byte, ok bool) {
	if len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c != '%' {
			buf = append(buf, c)
			continue
		}
		if i+2 >= len(path) {
			return buf, false
		}
		h, l := unhex(path[i+1]), unhex(path[i+2])
		if h < 0 || l < 0 {
			return buf, false
		}
		buf = append(buf, byte(h<<4|l))
		i += 2
	}
	return buf, true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
