package filters

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
)

// Dapr error codes that switchyard answers with.
const (
	ErrCodeDirectInvoke      = "ERR_DIRECT_INVOKE"
	ErrCodeNotFound          = "ERR_NOT_FOUND"
	ErrCodeBodyTooLarge      = "ERR_BODY_TOO_LARGE"
	ErrCodeMalformedRequest  = "ERR_MALFORMED_REQUEST"
	ErrCodeHealthNotReady    = "ERR_HEALTH_NOT_READY"
	ErrCodeOutboundNotReady  = "ERR_OUTBOUND_HEALTH_NOT_READY"
	ErrCodeUnauthorized      = "ERR_UNAUTHORIZED" // bad or missing dapr-api-token
	ErrCodePermissionDenied  = "ERR_PERMISSION_DENIED"
	ErrCodeTooManyRequests   = "ERR_TOO_MANY_REQUESTS"
	ErrCodePubSubNotFound    = "ERR_PUBSUB_NOT_FOUND"
	ErrCodePubSubEmpty       = "ERR_PUBSUB_EMPTY"
	ErrCodePubSubTopicEmpty  = "ERR_TOPIC_NAME_EMPTY"
	ErrCodePubSubForbidden   = "ERR_PUBSUB_FORBIDDEN"
	ErrCodePubSubPublish     = "ERR_PUBSUB_PUBLISH_MESSAGE"
	ErrCodePubSubCloudEvents = "ERR_PUBSUB_CLOUD_EVENTS_SER"
	ErrCodeNotImplemented    = "ERR_NOT_IMPLEMENTED"
	ErrCodeInternal          = "ERR_INTERNAL"
)

// Error is an error with the Dapr error code, HTTP status and gRPC code a
// listener answers with. Components return it (or wrap it); only listeners
// turn it into a response.
type Error struct {
	Code       string
	HTTPStatus int
	GRPCCode   codes.Code
	Message    string
	Err        error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

// NewError builds an *Error; the message is formatted with args, and the
// last arg, if it is an error, becomes the cause too.
func NewError(code string, status int, gc codes.Code, format string, args ...any) *Error {
	e := &Error{Code: code, HTTPStatus: status, GRPCCode: gc, Message: fmt.Sprintf(format, args...)}
	if n := len(args); n > 0 {
		if cause, ok := args[n-1].(error); ok {
			e.Err = cause
		}
	}
	return e
}

// AsError returns err as an *Error. An error that is not one becomes
// ERR_DIRECT_INVOKE/500 for invocations and ERR_INTERNAL/500 otherwise.
func AsError(err error, kind Kind) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	code := ErrCodeInternal
	if kind == KindInvoke {
		code = ErrCodeDirectInvoke
	} else if kind == KindPublish {
		code = ErrCodePubSubPublish
	}
	return &Error{Code: code, HTTPStatus: http.StatusInternalServerError, GRPCCode: codes.Internal, Message: err.Error(), Err: err}
}

// ErrStreamUnsupported is returned by clusters that cannot carry a stream.
var ErrStreamUnsupported = NewError(ErrCodeDirectInvoke, http.StatusInternalServerError, codes.Unimplemented, "streaming is not supported by this upstream")
