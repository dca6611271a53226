// Package headers is an example of a filter written outside switchyard's
// standard set and compiled into a custom build (see examples/custombuild).
// It sets request headers before the router forwards the request and
// response headers after the upstream answered:
//
//	filters:
//	  - name: headers
//	    config:
//	      request_headers:  {x-tenant: blue}
//	      response_headers: {x-served-by: switchyard}
//	  - name: router
//
// Header values are converted to bytes once, when the chain is built, so the
// filter allocates nothing per request.
package headers

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/switchyard-proxy/switchyard/filters"
)

// Name is the filter's name in a chain.
const Name = "headers"

func init() { filters.Register(factory{}) }

// Config is the filter's YAML config.
type Config struct {
	RequestHeaders  map[string]string `json:"request_headers"`
	ResponseHeaders map[string]string `json:"response_headers"`
}

// Validate refuses an empty config and empty header names.
func (c *Config) Validate() error {
	if len(c.RequestHeaders) == 0 && len(c.ResponseHeaders) == 0 {
		return errors.New("headers: set request_headers or response_headers")
	}
	for _, m := range []map[string]string{c.RequestHeaders, c.ResponseHeaders} {
		for k := range m {
			if strings.TrimSpace(k) == "" {
				return errors.New("headers: empty header name")
			}
		}
	}
	return nil
}

type factory struct{}

func (factory) Name() string   { return Name }
func (factory) NewConfig() any { return &Config{} }
func (factory) Build(cfg any, _ filters.Env) (filters.Filter, error) {
	c := cfg.(*Config)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &Filter{req: pairs(c.RequestHeaders), resp: pairs(c.ResponseHeaders)}, nil
}

type pair struct{ k, v []byte }

// pairs returns the headers sorted by name, so the order is stable.
func pairs(m map[string]string) []pair {
	out := make([]pair, 0, len(m))
	for k, v := range m {
		out = append(out, pair{[]byte(k), []byte(v)})
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].k) < string(out[j].k) })
	return out
}

// Filter sets the configured headers.
type Filter struct{ req, resp []pair }

// Wrap returns the handler that sets the headers around next.
func (f *Filter) Wrap(next filters.Handler) filters.Handler {
	return &handler{f: f, next: next}
}

type handler struct {
	f    *Filter
	next filters.Handler
}

func (h *handler) Handle(ctx context.Context, ex *filters.Exchange) error {
	for _, p := range h.f.req {
		ex.Req.Header.SetBytesKV(p.k, p.v)
	}
	err := h.next.Handle(ctx, ex)
	if err == nil {
		for _, p := range h.f.resp {
			ex.Resp.Header.SetBytesKV(p.k, p.v)
		}
	}
	return err
}
