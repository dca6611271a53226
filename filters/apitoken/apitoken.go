// Package apitoken is the filter that checks the dapr-api-token header
// against the sidecar's API token, as daprd does when DAPR_API_TOKEN is set.
package apitoken

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/filters"
)

// Header is the request header that carries the caller's token.
const Header = "dapr-api-token"

var headerName = []byte(Header)

// Sentinel causes, for errors.Is.
var (
	ErrEmptyToken = errors.New("apitoken: empty token")
	ErrMissing    = errors.New("apitoken: missing api token")
	ErrMismatch   = errors.New("apitoken: api token mismatch")
)

// The errors the listener answers with: 401 ERR_UNAUTHORIZED over HTTP (daprd
// answers 401 "invalid api token"), Unauthenticated over gRPC. They are
// allocated once; the filter never builds an error per request.
var (
	errMissing  = &filters.Error{Code: filters.ErrCodeUnauthorized, HTTPStatus: http.StatusUnauthorized, GRPCCode: codes.Unauthenticated, Message: "apitoken: invalid api token: missing api token in request", Err: ErrMissing}
	errMismatch = &filters.Error{Code: filters.ErrCodeUnauthorized, HTTPStatus: http.StatusUnauthorized, GRPCCode: codes.Unauthenticated, Message: "apitoken: invalid api token: api token mismatch", Err: ErrMismatch}
)

// Filter checks the token and removes it from the request, so that the
// caller's token is never forwarded to the app or another sidecar.
type Filter struct {
	token []byte
}

var _ filters.Filter = (*Filter)(nil)

// New returns a filter that accepts requests carrying token.
func New(token string) (*Filter, error) {
	if token == "" {
		return nil, ErrEmptyToken
	}
	return &Filter{token: []byte(token)}, nil
}

// Wrap returns the handler that checks the token before calling next.
func (f *Filter) Wrap(next filters.Handler) filters.Handler {
	return &handler{token: f.token, next: next}
}

type handler struct {
	token []byte
	next  filters.Handler
}

func (h *handler) Handle(ctx context.Context, ex *filters.Exchange) error {
	got := ex.Req.Header.PeekBytes(headerName)
	if len(got) == 0 {
		return errMissing
	}
	// ConstantTimeCompare returns early only on a length mismatch, which
	// reveals the token's length and nothing else.
	if subtle.ConstantTimeCompare(got, h.token) != 1 {
		return errMismatch
	}
	ex.Req.Header.DelBytes(headerName)
	return h.next.Handle(ctx, ex)
}
