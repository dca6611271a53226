// Package dns is the "dns" name-resolution scheme: the app id (and
// namespace) are put into a name template, and the name is looked up with
// A/AAAA queries (port from the template) or as an SRV record (port from the
// answer). Kubernetes headless services fit the default template.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/internal/watch"
	"github.com/switchyard-proxy/switchyard/config"
)

// Scheme is the name this package registers.
const Scheme = "dns"

const component = "resolver/dns"

// Defaults.
const (
	DefaultTemplate        = "{app-id}-dapr.{namespace}.svc.cluster.local:50002"
	DefaultRefreshInterval = 30 * time.Second
	DefaultTimeout         = 5 * time.Second
	DefaultNamespace       = "default"
)

// Config is name_resolution.config for the dns scheme.
type Config struct {
	// Template is the name to look up, with {app-id} and {namespace}
	// replaced. Without srv it is host:port; with srv it names the SRV
	// record (no port).
	Template string `json:"template"`
	// SRV looks the name up as an SRV record; ports come from the answer.
	SRV bool `json:"srv"`
	// RefreshInterval between lookups; ResolveNow also looks up (at most
	// once a second).
	RefreshInterval config.Duration `json:"refresh_interval"`
	// Server is a DNS server (host:port) to ask instead of the system's.
	Server string `json:"server"`
	// Timeout bounds one lookup.
	Timeout config.Duration `json:"timeout"`
}

func (c *Config) applyDefaults() {
	if c.Template == "" {
		c.Template = DefaultTemplate
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = config.Duration(DefaultRefreshInterval)
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(DefaultTimeout)
	}
}

// Validate checks the settings (after defaults).
func (c *Config) Validate() error {
	probe := expand(c.Template, "app", "ns")
	if strings.ContainsAny(probe, "{}") {
		return fmt.Errorf("%s: template %q: only {app-id} and {namespace} may be used", component, c.Template)
	}
	if c.SRV {
		if _, _, err := net.SplitHostPort(probe); err == nil {
			return fmt.Errorf("%s: template %q: with srv the template names the SRV record and has no port", component, c.Template)
		}
	} else if _, _, err := splitHostPort(probe); err != nil {
		return fmt.Errorf("%s: template %q: %w", component, c.Template, err)
	}
	if c.RefreshInterval < 0 {
		return fmt.Errorf("%s: refresh_interval must not be negative", component)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%s: timeout must not be negative", component)
	}
	if c.Server != "" {
		if _, _, err := splitHostPort(c.Server); err != nil {
			return fmt.Errorf("%s: server %q: %w", component, c.Server, err)
		}
	}
	return nil
}

func splitHostPort(s string) (string, string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return "", "", errors.New("want host:port: empty host")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", "", fmt.Errorf("want host:port: bad port %q", port)
	}
	return host, port, nil
}

func expand(template, appID, namespace string) string {
	return strings.NewReplacer("{app-id}", appID, "{namespace}", namespace).Replace(template)
}

func decode(raw map[string]any) (*Config, error) {
	var c Config
	if err := config.DecodeStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", component, err)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

type builder struct{}

var (
	_ resolver.Builder         = (*builder)(nil)
	_ resolver.ConfigValidator = (*builder)(nil)
	_ resolver.Resolver        = (*dnsResolver)(nil)
)

func init() { resolver.Register(&builder{}) }

func (*builder) Scheme() string { return Scheme }

func (*builder) ValidateConfig(raw map[string]any) error {
	_, err := decode(raw)
	return err
}

func (*builder) Build(target resolver.Target, sink resolver.Sink, opts resolver.BuildOptions) (resolver.Resolver, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	if target.AppID == "" {
		return nil, fmt.Errorf("%s: empty app id", component)
	}
	if target.Namespace == "" {
		target.Namespace = DefaultNamespace
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &dnsResolver{
		target: target,
		name:   expand(c.Template, target.AppID, target.Namespace),
		srv:    c.SRV,
		res:    newNetResolver(c.Server),
	}
	r.w = watch.Start(watch.Config{
		Sink:       sink,
		Lookup:     r.lookup,
		Interval:   c.RefreshInterval.D(),
		Timeout:    c.Timeout.D(),
		EmptyError: watch.TargetError(component, target, resolver.ErrNoAddresses),
		Logger:     log.With(zap.String("scope", component), zap.String("app_id", target.AppID)),
	})
	return r, nil
}

// newNetResolver asks server (host:port) when set, the system otherwise.
func newNetResolver(server string) *net.Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
}

type dnsResolver struct {
	target resolver.Target
	name   string // expanded template
	srv    bool
	res    *net.Resolver
	w      *watch.Watcher
}

func (r *dnsResolver) ResolveNow() { r.w.ResolveNow() }
func (r *dnsResolver) Close()      { r.w.Close() }

func (r *dnsResolver) lookup(ctx context.Context) ([]resolver.Address, error) {
	var out []resolver.Address
	if r.srv {
		_, srvs, err := r.res.LookupSRV(ctx, "", "", r.name)
		if err != nil {
			return nil, watch.TargetError(component, r.target, fmt.Errorf("srv lookup of %s: %w", r.name, err))
		}
		for _, s := range srvs {
			port := strconv.Itoa(int(s.Port))
			ips, err := r.res.LookupIPAddr(ctx, s.Target)
			if err != nil {
				return nil, watch.TargetError(component, r.target, fmt.Errorf("srv target of %s: %w", r.name, err))
			}
			for _, ip := range ips {
				out = append(out, resolver.Address{Addr: net.JoinHostPort(ip.String(), port)})
			}
		}
		return out, nil
	}
	host, port, err := net.SplitHostPort(r.name)
	if err != nil { // validated; cannot happen
		return nil, watch.TargetError(component, r.target, err)
	}
	ips, err := r.res.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, watch.TargetError(component, r.target, fmt.Errorf("lookup of %s: %w", host, err))
	}
	for _, ip := range ips {
		out = append(out, resolver.Address{Addr: net.JoinHostPort(ip.String(), port)})
	}
	return out, nil
}
