// Package mdns is the "mdns" name-resolution scheme, daprd's standalone
// default, built on hashicorp/mdns. A sidecar announces a DNS-SD service
// whose type is its app id (daprd's convention: service "<app-id>" in domain
// "local.", one instance per sidecar, TXT record = the app id); a resolver
// browses for the app id and caches what answers.
//
// mDNS needs multicast: it does not work over loopback alone, and VPNs and
// security software often block it. The "local" scheme is the default for
// one host for that reason.
package mdns

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	hmdns "github.com/hashicorp/mdns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/internal/watch"
	"github.com/switchyard-proxy/switchyard/config"
)

// Scheme is the name this package registers.
const Scheme = "mdns"

const component = "resolver/mdns"

// Defaults, as daprd's mDNS resolver has them.
const (
	DefaultDomain          = "local."
	DefaultBrowseTimeout   = time.Second
	DefaultRefreshInterval = 30 * time.Second
	DefaultAddressTTL      = 60 * time.Second
)

// Config is name_resolution.config for the mdns scheme.
type Config struct {
	// Domain of the services; "local." unless you know better.
	Domain string `json:"domain"`
	// BrowseTimeout is how long one browse collects answers.
	BrowseTimeout config.Duration `json:"browse_timeout"`
	// RefreshInterval between background browses; ResolveNow also browses
	// (at most once a second).
	RefreshInterval config.Duration `json:"refresh_interval"`
	// AddressTTL is how long an address stays after the last browse that
	// saw it (mDNS answers get lost; withdrawn instances send no goodbye).
	AddressTTL config.Duration `json:"address_ttl"`
	// Interface is the network interface for multicast; empty: the system's
	// default multicast route.
	Interface string `json:"interface"`
	// DisableIPv6 browses and announces over IPv4 only.
	DisableIPv6 bool `json:"disable_ipv6"`
}

func (c *Config) applyDefaults() {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if !strings.HasSuffix(c.Domain, ".") {
		c.Domain += "."
	}
	if c.BrowseTimeout == 0 {
		c.BrowseTimeout = config.Duration(DefaultBrowseTimeout)
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = config.Duration(DefaultRefreshInterval)
	}
	if c.AddressTTL == 0 {
		c.AddressTTL = config.Duration(DefaultAddressTTL)
	}
}

// Validate checks the settings (after defaults).
func (c *Config) Validate() error {
	switch {
	case c.BrowseTimeout <= 0:
		return fmt.Errorf("%s: browse_timeout must be positive", component)
	case c.RefreshInterval <= 0:
		return fmt.Errorf("%s: refresh_interval must be positive", component)
	case c.AddressTTL < c.RefreshInterval:
		return fmt.Errorf("%s: address_ttl (%v) must not be shorter than refresh_interval (%v)", component, c.AddressTTL, c.RefreshInterval)
	case strings.Trim(c.Domain, ".") == "":
		return fmt.Errorf("%s: invalid domain %q", component, c.Domain)
	}
	return nil
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

func (c *Config) iface() (*net.Interface, error) {
	if c.Interface == "" {
		return nil, nil
	}
	ifi, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return nil, fmt.Errorf("%s: interface %q: %w", component, c.Interface, err)
	}
	return ifi, nil
}

// checkLabel refuses app ids that cannot be one DNS label.
func checkLabel(appID string) error {
	if appID == "" || len(appID) > 63 || strings.ContainsAny(appID, ". \\") {
		return fmt.Errorf("%s: app id %q cannot be an mDNS service name", component, appID)
	}
	return nil
}

func logger(l *zap.Logger, appID string) *zap.Logger {
	if l == nil {
		l = zap.NewNop()
	}
	return l.With(zap.String("scope", component), zap.String("app_id", appID))
}

type builder struct{}

var (
	_ resolver.Builder         = (*builder)(nil)
	_ resolver.Announcer       = (*builder)(nil)
	_ resolver.ConfigValidator = (*builder)(nil)
	_ resolver.Resolver        = (*mdnsResolver)(nil)
)

func init() { resolver.Register(&builder{}) }

func (*builder) Scheme() string { return Scheme }

func (*builder) ValidateConfig(raw map[string]any) error {
	_, err := decode(raw)
	return err
}

// instanceName is unique per sidecar: several may run on one host, and in
// one process (tests).
func instanceName(inst resolver.Instance) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	host = strings.ReplaceAll(host, ".", "-")
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(inst.InternalPort)
}

// Announce starts an mDNS responder for the instance until stop. Responders
// of several sidecars on one host share UDP port 5353.
func (*builder) Announce(inst resolver.Instance, opts resolver.BuildOptions) (func() error, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	if err := checkLabel(inst.AppID); err != nil {
		return nil, err
	}
	if inst.InternalPort < 1 || inst.InternalPort > 65535 {
		return nil, fmt.Errorf("%s: app id %q: invalid internal port %d", component, inst.AppID, inst.InternalPort)
	}
	if inst.Host == "" {
		return nil, fmt.Errorf("%s: app id %q: empty host", component, inst.AppID)
	}
	var ips []net.IP
	if ip := net.ParseIP(inst.Host); ip != nil {
		ips = []net.IP{ip}
	} else if ips, err = net.LookupIP(inst.Host); err != nil {
		return nil, fmt.Errorf("%s: app id %q: host %q: %w", component, inst.AppID, inst.Host, err)
	}
	ifi, err := c.iface()
	if err != nil {
		return nil, err
	}
	name := instanceName(inst)
	// A host name of our own per instance keeps the A records of two
	// sidecars of one host apart in every browser's bookkeeping.
	svc, err := hmdns.NewMDNSService(name, inst.AppID, c.Domain, name+"."+c.Domain, inst.InternalPort, ips, []string{inst.AppID})
	if err != nil {
		return nil, fmt.Errorf("%s: app id %q: %w", component, inst.AppID, err)
	}
	log := logger(opts.Logger, inst.AppID)
	srv, err := hmdns.NewServer(&hmdns.Config{Zone: svc, Iface: ifi, Logger: zap.NewStdLog(log.WithOptions(zap.IncreaseLevel(zapcore.DebugLevel)))})
	if err != nil {
		return nil, fmt.Errorf("%s: announce app id %q: %w", component, inst.AppID, err)
	}
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			if e := srv.Shutdown(); e != nil {
				err = fmt.Errorf("%s: withdraw app id %q: %w", component, inst.AppID, e)
			}
		})
		return err
	}, nil
}

// Build browses for the app id at start, every refresh_interval and on
// ResolveNow, and pushes what answered within address_ttl.
func (*builder) Build(target resolver.Target, sink resolver.Sink, opts resolver.BuildOptions) (resolver.Resolver, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	if err := checkLabel(target.AppID); err != nil {
		return nil, err
	}
	ifi, err := c.iface()
	if err != nil {
		return nil, err
	}
	log := logger(opts.Logger, target.AppID)
	r := &mdnsResolver{
		target: target,
		cfg:    c,
		ifi:    ifi,
		suffix: "." + target.AppID + "." + c.Domain,
		seen:   map[string]time.Time{},
		stdlog: zap.NewStdLog(log.WithOptions(zap.IncreaseLevel(zapcore.DebugLevel))),
	}
	r.w = watch.Start(watch.Config{
		Sink:     sink,
		Lookup:   r.lookup,
		Interval: c.RefreshInterval.D(),
		EmptyError: watch.TargetError(component, target,
			fmt.Errorf("no sidecar answered an mDNS browse for %s%s: %w", target.AppID, "."+c.Domain, resolver.ErrNoAddresses)),
		Logger: log,
	})
	return r, nil
}

type mdnsResolver struct {
	target resolver.Target
	cfg    *Config
	ifi    *net.Interface
	suffix string // ".<app-id>.<domain>": instance names end so
	stdlog *log.Logger
	w      *watch.Watcher

	// seen is only touched by the watch loop's goroutine.
	seen map[string]time.Time // address -> last seen
}

func (r *mdnsResolver) ResolveNow() { r.w.ResolveNow() }
func (r *mdnsResolver) Close()      { r.w.Close() }

// lookup browses once and returns every address seen within address_ttl.
func (r *mdnsResolver) lookup(ctx context.Context) ([]resolver.Address, error) {
	found, err := r.browse(ctx, r.cfg.DisableIPv6)
	if err != nil && !r.cfg.DisableIPv6 && ctx.Err() == nil {
		// As daprd does: when IPv4+IPv6 cannot be used, try IPv4 alone.
		found, err = r.browse(ctx, true)
	}
	if err != nil {
		return nil, watch.TargetError(component, r.target, fmt.Errorf("browse: %w", err))
	}
	now := time.Now()
	for _, a := range found {
		r.seen[a] = now
	}
	out := make([]resolver.Address, 0, len(r.seen))
	for a, at := range r.seen {
		if now.Sub(at) > r.cfg.AddressTTL.D() {
			delete(r.seen, a)
			continue
		}
		out = append(out, resolver.Address{Addr: a})
	}
	return out, nil
}

// maxEntries bounds the instances one browse collects.
const maxEntries = 1024

func (r *mdnsResolver) browse(ctx context.Context, v4only bool) ([]string, error) {
	// hashicorp/mdns keeps writing to an entry after sending it, on the
	// goroutine that runs the query (ours): read the entries only after
	// QueryContext returned, never concurrently.
	entries := make(chan *hmdns.ServiceEntry, maxEntries)
	params := &hmdns.QueryParam{
		Service:     r.target.AppID,
		Domain:      r.cfg.Domain,
		Timeout:     r.cfg.BrowseTimeout.D(),
		Interface:   r.ifi,
		Entries:     entries,
		DisableIPv6: v4only,
		Logger:      r.stdlog,
	}
	err := hmdns.QueryContext(ctx, params)
	close(entries)
	if err != nil {
		return nil, err
	}
	var out []string
	for e := range entries {
		if a, ok := r.address(e); ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// address turns an answer for our service into host:port.
func (r *mdnsResolver) address(e *hmdns.ServiceEntry) (string, bool) {
	if !strings.HasSuffix(strings.ToLower(e.Name), strings.ToLower(r.suffix)) || e.Port <= 0 {
		return "", false
	}
	port := strconv.Itoa(e.Port)
	switch {
	case e.AddrV4 != nil:
		return net.JoinHostPort(e.AddrV4.String(), port), true
	case e.AddrV6IPAddr != nil:
		return net.JoinHostPort(e.AddrV6IPAddr.String(), port), true
	}
	return "", false
}
