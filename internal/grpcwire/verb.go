package grpcwire

import (
	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
)

// Verb returns the HTTP method of an HTTPExtension verb; NONE (a gRPC
// caller without an HTTP extension) is POST, as daprd sends it to HTTP apps.
func Verb(v commonv1pb.HTTPExtension_Verb) string {
	switch v {
	case commonv1pb.HTTPExtension_GET:
		return "GET"
	case commonv1pb.HTTPExtension_HEAD:
		return "HEAD"
	case commonv1pb.HTTPExtension_PUT:
		return "PUT"
	case commonv1pb.HTTPExtension_DELETE:
		return "DELETE"
	case commonv1pb.HTTPExtension_CONNECT:
		return "CONNECT"
	case commonv1pb.HTTPExtension_OPTIONS:
		return "OPTIONS"
	case commonv1pb.HTTPExtension_TRACE:
		return "TRACE"
	case commonv1pb.HTTPExtension_PATCH:
		return "PATCH"
	}
	return "POST"
}

// VerbOf returns the HTTPExtension verb of an HTTP method.
func VerbOf(m []byte) commonv1pb.HTTPExtension_Verb {
	switch string(m) {
	case "GET":
		return commonv1pb.HTTPExtension_GET
	case "HEAD":
		return commonv1pb.HTTPExtension_HEAD
	case "POST":
		return commonv1pb.HTTPExtension_POST
	case "PUT":
		return commonv1pb.HTTPExtension_PUT
	case "DELETE":
		return commonv1pb.HTTPExtension_DELETE
	case "CONNECT":
		return commonv1pb.HTTPExtension_CONNECT
	case "OPTIONS":
		return commonv1pb.HTTPExtension_OPTIONS
	case "TRACE":
		return commonv1pb.HTTPExtension_TRACE
	case "PATCH":
		return commonv1pb.HTTPExtension_PATCH
	}
	return commonv1pb.HTTPExtension_POST
}
