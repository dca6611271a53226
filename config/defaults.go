package config

import (
	"encoding/json"
	"net"
	"os"
	"strconv"
	"strings"
)

// Model defaults that are not daprd settings.
const (
	DefaultNamespace     = "default"
	DefaultLBPolicy      = "round_robin"
	DefaultInMemoryType  = "pubsub.in-memory"
	DefaultAdminAddress  = "127.0.0.1" // the admin endpoints are never exposed by default
	DefaultMetricsAddr   = "0.0.0.0"   // daprd's metrics listen address
	DefaultTrustDomain   = "public"    // Dapr's trust domain when none is given
	ActionAllow          = "allow"
	ActionDeny           = "deny"
	defaultComponentVers = "v1"
)

// The subscription listener: it has no socket; its source is the brokers.
const (
	ListenerSubscription = "subscription"       // broker subscriptions -> the app
	DefaultSubName       = "dapr_subscriptions" // name of the default one
)

// ApplyDefaults fills what the configuration leaves out with daprd's
// behaviour. It does not touch ports (0 is meaningful: a free port); the
// built-in port defaults are those of the flags (see Defaults).
//
//   - no listeners: daprd's set, each with the router as its only filter:
//     dapr_http (HTTP API on every dapr_listen_addresses at dapr_http_port,
//     all interfaces when none), dapr_grpc (gRPC API, same addresses at
//     dapr_grpc_port), dapr_internal (all interfaces at
//     dapr_internal_grpc_port), metrics (0.0.0.0:metrics_port, when
//     enabled), admin (127.0.0.1:admin_port), dapr_subscriptions (the
//     subscription listener: declarative and programmatic subscriptions,
//     delivered to the app);
//   - no pubsub.* component: the in-memory one, named "pubsub";
//   - namespace: $NAMESPACE, else "default"; name resolution: "local";
//     clusters: round_robin; Dapr's access-control defaults.
//
// Listeners that the configuration lists are kept as given.
func (c *Config) ApplyDefaults() {
	if c.origin == nil {
		c.origin = map[string]string{}
	}
	if c.Namespace == "" {
		c.Namespace = os.Getenv(EnvNamespace)
		if c.Namespace == "" {
			c.Namespace = DefaultNamespace
		}
	}
	if c.Mode == "" {
		c.Mode = ModeStandalone
	}
	if c.AppProtocol == "" {
		c.AppProtocol = "http"
	}
	c.AppProtocol = strings.ToLower(c.AppProtocol)
	if c.AppChannelAddress == "" {
		c.AppChannelAddress = "127.0.0.1"
	}
	if c.AppMaxConcurrency < 0 {
		c.AppMaxConcurrency = 0
	}
	if c.EnableMetrics == nil {
		t := true
		c.EnableMetrics = &t
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.DaprHTTPMaxRequestSize == 0 {
		c.DaprHTTPMaxRequestSize = 4
	}
	if c.DaprHTTPReadBufferSize == 0 {
		c.DaprHTTPReadBufferSize = 4
	}

	hasPubSub := false
	for _, comp := range c.Components {
		if strings.HasPrefix(comp.Type, "pubsub.") {
			hasPubSub = true
			break
		}
	}
	if !hasPubSub {
		c.Components = append(c.Components, Component{Name: DefaultPubSub, Type: DefaultInMemoryType, Version: defaultComponentVers})
		c.origin["components.default"] = "defaults"
	}

	if c.NameResolution.Scheme == "" {
		c.NameResolution.Scheme = DefaultScheme
	}
	for i := range c.Clusters {
		if c.Clusters[i].LBPolicy == "" {
			c.Clusters[i].LBPolicy = DefaultLBPolicy
		}
	}

	if ac := c.AccessControl; ac != nil {
		if ac.DefaultAction == "" && ac.TrustDomain == "" && len(ac.Policies) == 0 {
			c.AccessControl = nil // an empty section: no access control, as in Dapr
		} else {
			if ac.TrustDomain == "" {
				ac.TrustDomain = DefaultTrustDomain
			}
			ac.DefaultAction = strings.ToLower(ac.DefaultAction)
			if ac.DefaultAction == "" {
				// Dapr: policies without a global default deny by default.
				ac.DefaultAction = ActionAllow
				if len(ac.Policies) > 0 {
					ac.DefaultAction = ActionDeny
				}
			}
		}
	}

	// Last: the default chains depend on the settings defaulted above.
	if len(c.Listeners) == 0 {
		c.Listeners = c.defaultListeners()
		c.origin["listeners"] = "defaults"
	}
}

// defaultListeners builds daprd's listeners from the port settings.
func (c *Config) defaultListeners() []Listener {
	router := func() []FilterSpec { return []FilterSpec{{Name: RouterFilter}} }
	// The Dapr API listeners check DAPR_API_TOKEN when it is set and record
	// daprd's metrics, as daprd does.
	api := func() []FilterSpec {
		var fs []FilterSpec
		if c.APIToken != "" {
			fs = append(fs, FilterSpec{Name: "apitoken", Config: map[string]any{"token": c.APIToken}})
		}
		return append(fs, FilterSpec{Name: "metrics"}, FilterSpec{Name: RouterFilter})
	}
	hosts := c.DaprListenAddresses
	if len(hosts) == 0 {
		hosts = []string{""} // daprd: all interfaces
	}
	at := func(port int) []string {
		out := make([]string, len(hosts))
		for i, h := range hosts {
			out[i] = net.JoinHostPort(h, strconv.Itoa(port))
		}
		return out
	}
	ls := []Listener{
		{Name: DefaultHTTPName, Kind: ListenerHTTP, Addresses: at(c.DaprHTTPPort), Filters: api()},
		{Name: DefaultGRPCName, Kind: ListenerGRPC, Addresses: at(c.DaprGRPCPort), Filters: api()},
		{Name: DefaultIntName, Kind: ListenerInternal, Addresses: []string{net.JoinHostPort("", strconv.Itoa(c.DaprInternalGRPCPort))}, Filters: c.internalChain()},
	}
	if c.EnableMetrics == nil || *c.EnableMetrics {
		ls = append(ls, Listener{Name: DefaultMetrics, Kind: ListenerMetrics, Addresses: []string{net.JoinHostPort(DefaultMetricsAddr, strconv.Itoa(c.MetricsPort))}, Filters: router()})
	}
	ls = append(ls, Listener{Name: DefaultAdmin, Kind: ListenerAdmin, Addresses: []string{net.JoinHostPort(DefaultAdminAddress, strconv.Itoa(c.AdminPort))}, Filters: router()})
	ls = append(ls, Listener{Name: DefaultSubName, Kind: ListenerSubscription, Filters: router()})
	return ls
}

// internalChain is the internal listener's chain: Dapr's access control
// (enforced on the callee, as daprd does) when the config has it, then the
// router.
func (c *Config) internalChain() []FilterSpec {
	fs := []FilterSpec{{Name: RouterFilter}}
	if c.AccessControl == nil {
		return fs
	}
	var m map[string]any
	b, err := json.Marshal(c.AccessControl)
	if err != nil || json.Unmarshal(b, &m) != nil {
		return fs
	}
	m["app_protocol"] = c.AppProtocol
	return append([]FilterSpec{{Name: "acl", Config: m}}, fs...)
}

// DropUnavailableDefaults removes from what ApplyDefaults added the
// listeners whose kind and the default component whose type this build
// does not have (a custom build without the subscription listener or the
// in-memory broker still starts with no configuration file). Listeners and
// components the configuration names are never removed: those fail at build
// with the reason. It returns the names it removed.
func (c *Config) DropUnavailableDefaults(hasListenerKind, hasComponentType func(string) bool) []string {
	var dropped []string
	if c.origin["listeners"] == "defaults" {
		kept := c.Listeners[:0]
		for _, l := range c.Listeners {
			if hasListenerKind(l.Kind) {
				kept = append(kept, l)
				continue
			}
			dropped = append(dropped, "listener "+l.Name)
		}
		c.Listeners = kept
	}
	if c.origin["components.default"] == "defaults" {
		kept := c.Components[:0]
		for _, comp := range c.Components {
			if comp.Name == DefaultPubSub && comp.Type == DefaultInMemoryType && !hasComponentType(comp.Type) {
				dropped = append(dropped, "component "+comp.Name)
				continue
			}
			kept = append(kept, comp)
		}
		c.Components = kept
	}
	return dropped
}
