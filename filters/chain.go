package filters

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/switchyard-proxy/switchyard/config"
)

// Chain is a built filter chain: the first handler, and what must be closed
// when the snapshot it belongs to is retired.
type Chain struct {
	Handler Handler
	closers []io.Closer
}

// Handle runs the chain.
func (c *Chain) Handle(ctx context.Context, ex *Exchange) error { return c.Handler.Handle(ctx, ex) }

// Close closes every filter that holds resources.
func (c *Chain) Close() error {
	var errs []error
	for i := len(c.closers) - 1; i >= 0; i-- {
		if err := c.closers[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	c.closers = nil
	return errors.Join(errs...)
}

// BuildChain builds the filters named in specs, in order, and wraps them
// back to front so that specs[0] runs first. The router must be last; it is
// appended when specs do not name it. Every config is decoded strictly and
// validated before any filter is built; if a build fails, the filters
// already built are closed.
func BuildChain(specs []config.FilterSpec, env Env) (*Chain, error) {
	specs = WithRouter(specs)
	type built struct {
		name string
		cfg  any
		f    Factory
	}
	bs := make([]built, 0, len(specs))
	for i, s := range specs {
		f, ok := Lookup(s.Name)
		if !ok {
			return nil, fmt.Errorf("filters[%d]: %w %q (registered: %v)", i, ErrUnknownFilter, s.Name, Names())
		}
		if s.Name == config.RouterFilter && i != len(specs)-1 {
			return nil, fmt.Errorf("filters[%d]: the router must be the last filter", i)
		}
		cfg := f.NewConfig()
		if cfg != nil {
			if err := config.DecodeStrict(s.Config, cfg); err != nil {
				return nil, fmt.Errorf("filters[%d] (%s).config: %w", i, s.Name, err)
			}
			if v, ok := cfg.(Validator); ok {
				if err := v.Validate(); err != nil {
					return nil, fmt.Errorf("filters[%d] (%s).config: %w", i, s.Name, err)
				}
			}
		}
		bs = append(bs, built{s.Name, cfg, f})
	}
	chain := &Chain{}
	filters := make([]Filter, len(bs))
	for i, b := range bs {
		flt, err := b.f.Build(b.cfg, env)
		if err != nil {
			_ = chain.Close()
			return nil, fmt.Errorf("filters[%d] (%s): %w", i, b.name, err)
		}
		if c, ok := flt.(io.Closer); ok {
			chain.closers = append(chain.closers, c)
		}
		filters[i] = flt
	}
	var h Handler
	for i := len(filters) - 1; i >= 0; i-- {
		h = filters[i].Wrap(h)
	}
	chain.Handler = h
	return chain, nil
}

// WithRouter returns specs with the router appended when it is missing.
func WithRouter(specs []config.FilterSpec) []config.FilterSpec {
	for _, s := range specs {
		if s.Name == config.RouterFilter {
			return specs
		}
	}
	out := make([]config.FilterSpec, len(specs), len(specs)+1)
	copy(out, specs)
	return append(out, config.FilterSpec{Name: config.RouterFilter})
}
