// Package static is the "static" name-resolution scheme: a fixed map from
// app id to sidecar addresses, given in the configuration.
package static

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/internal/watch"
	"github.com/switchyard-proxy/switchyard/config"
)

// Scheme is the name this package registers.
const Scheme = "static"

const component = "resolver/static"

// ErrUnknownApp is reported for an app id the configuration does not list.
var ErrUnknownApp = errors.New("app id not in the static configuration")

// Config is name_resolution.config for the static scheme.
type Config struct {
	// Apps maps an app id to the host:port addresses of its sidecars'
	// internal gRPC listeners.
	Apps map[string][]string `json:"apps"`
}

// Validate checks every address.
func (c *Config) Validate() error {
	ids := make([]string, 0, len(c.Apps))
	for id := range c.Apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if id == "" {
			return fmt.Errorf("%s: apps: empty app id", component)
		}
		for i, a := range c.Apps[id] {
			if err := checkHostPort(a); err != nil {
				return fmt.Errorf("%s: apps.%s[%d]: %w", component, id, i, err)
			}
		}
	}
	return nil
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("invalid address %q: %w", a, err)
	}
	if host == "" {
		return fmt.Errorf("invalid address %q: empty host", a)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("invalid address %q: bad port", a)
	}
	return nil
}

func decode(raw map[string]any) (*Config, error) {
	var c Config
	if err := config.DecodeStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", component, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

type builder struct{}

var (
	_ resolver.Builder         = (*builder)(nil)
	_ resolver.ConfigValidator = (*builder)(nil)
	_ resolver.Resolver        = (*staticResolver)(nil)
)

func init() { resolver.Register(&builder{}) }

func (*builder) Scheme() string { return Scheme }

func (*builder) ValidateConfig(raw map[string]any) error {
	_, err := decode(raw)
	return err
}

// Build pushes the configured addresses (or reports ErrUnknownApp) before it
// returns; the answer never changes.
func (*builder) Build(target resolver.Target, sink resolver.Sink, opts resolver.BuildOptions) (resolver.Resolver, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	list, ok := c.Apps[target.AppID]
	if !ok {
		sink.ReportError(watch.TargetError(component, target, ErrUnknownApp))
		return &staticResolver{}, nil
	}
	st := resolver.State{Addresses: make([]resolver.Address, 0, len(list))}
	for _, a := range list {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	if err := sink.UpdateState(st); err != nil {
		return nil, watch.TargetError(component, target, err)
	}
	if len(list) == 0 {
		sink.ReportError(watch.TargetError(component, target, resolver.ErrNoAddresses))
	}
	return &staticResolver{}, nil
}

// staticResolver has nothing to watch.
type staticResolver struct{}

func (*staticResolver) ResolveNow() {}
func (*staticResolver) Close()      {}
