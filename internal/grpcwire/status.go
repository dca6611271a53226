package grpcwire

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-proxy/switchyard/filters"
)

// ErrorInfo domain and metadata keys, as daprd sets them.
const (
	Domain       = "dapr.io"
	MetaHTTPCode = "http.code"
	MetaHTTPErr  = "http.error_message"
)

// Status turns a chain error into the gRPC status a listener answers with:
// the filters.Error's gRPC code and message, and an ErrorInfo whose reason
// is the Dapr error code and whose metadata carries the HTTP status.
func Status(err error, kind filters.Kind) *status.Status {
	var fe *filters.Error
	if !errors.As(err, &fe) {
		if s, ok := status.FromError(err); ok {
			return s
		}
	}
	e := filters.AsError(err, kind)
	gc := e.GRPCCode
	if gc == codes.OK {
		gc = codes.Internal
	}
	st := status.New(gc, e.Message)
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{
		Reason: e.Code, Domain: Domain,
		Metadata: map[string]string{MetaHTTPCode: strconv.Itoa(e.HTTPStatus)},
	}); derr == nil {
		st = d
	}
	return st
}

// ErrorFromStatus turns a status received from a peer sidecar into a
// filters.Error, keeping the peer's Dapr code and HTTP status when its
// ErrorInfo carries them. answered is true when the status came from a
// sidecar (it has a dapr.io ErrorInfo), false when it is the transport's.
func ErrorFromStatus(st *status.Status) (e *filters.Error, answered bool) {
	e = &filters.Error{Code: filters.ErrCodeDirectInvoke, GRPCCode: st.Code(), Message: st.Message(),
		HTTPStatus: HTTPStatusFromCode(st.Code()), Err: st.Err()}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != Domain {
			continue
		}
		answered = true
		if strings.HasPrefix(info.GetReason(), "ERR_") {
			e.Code = info.GetReason()
		}
		if hc, err := strconv.Atoi(info.GetMetadata()[MetaHTTPCode]); err == nil && hc >= 100 {
			e.HTTPStatus = hc
		}
	}
	return e, answered
}

// HTTPResponseStatus is daprd's answer to a gRPC caller when the app
// answered with a non-2xx HTTP status: the matching gRPC code, the status
// text as message, and an ErrorInfo with the HTTP code and the start of the
// body. It returns nil for 2xx.
func HTTPResponseStatus(code int, body []byte) *status.Status {
	gc := CodeFromHTTPStatus(code)
	if gc == codes.OK {
		return nil
	}
	text := http.StatusText(code)
	if len(body) > 63 {
		n := 63
		for n > 63-utf8.UTFMax && !utf8.RuneStart(body[n]) {
			n-- // do not split a character
		}
		body = body[:n]
	}
	// Protobuf refuses to marshal a string that is not UTF-8, which would
	// drop the ErrorInfo and with it the app's HTTP status.
	msg := strings.ToValidUTF8(string(body), "\uFFFD")
	st := status.New(gc, text)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: text, Domain: Domain,
		Metadata: map[string]string{MetaHTTPCode: strconv.Itoa(code), MetaHTTPErr: msg}}); err == nil {
		st = d
	}
	return st
}

// HTTPStatusFromCode maps a gRPC code to an HTTP status (grpc-gateway's table, as daprd).
func HTTPStatusFromCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return http.StatusRequestTimeout
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// CodeFromHTTPStatus maps an HTTP status to a gRPC code, as daprd.
func CodeFromHTTPStatus(s int) codes.Code {
	switch s {
	case http.StatusRequestTimeout:
		return codes.Canceled
	case http.StatusInternalServerError:
		return codes.Unknown
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusConflict:
		return codes.AlreadyExists
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	if s >= 200 && s < 300 {
		return codes.OK
	}
	return codes.Unknown
}
