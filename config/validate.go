package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Accepted values.
var (
	listenerKinds = []string{ListenerHTTP, ListenerGRPC, ListenerInternal, ListenerAdmin, ListenerMetrics, ListenerSubscription}
	clusterKinds  = []string{ClusterHTTP, ClusterGRPCApp, ClusterSidecar}
	lbPolicies    = []string{"round_robin", "least_request", "random"}
	appProtocols  = []string{"http", "grpc"}
	logLevels     = []string{"debug", "info", "warn", "error", "fatal"}
	httpVerbs     = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "*"}
	aclActions    = []string{ActionAllow, ActionDeny}

	pubsubTypeRe = regexp.MustCompile(`^pubsub\.[a-z0-9][a-z0-9._-]*$`)
	schemeRe     = regexp.MustCompile(`^[a-z][a-z0-9+.-]*$`)
)

// problems collects validation errors as "<source>: <path>: <reason>".
type problems struct{ errs []error }

func (p *problems) add(src, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	if src != "" {
		msg = src + ": " + msg
	}
	p.errs = append(p.errs, errors.New(msg))
}

// where says where a top-level key came from, for messages: a file, a flag
// or an environment variable; empty for built-in defaults.
func (c *Config) where(key string) string {
	w := c.origin[key]
	if w == "defaults" {
		return ""
	}
	return w
}

// Validate checks the whole configuration and returns every problem found,
// joined, each as "<source>: <field path>: <reason>", where the source is
// the file (or flag, or environment variable) the value came from, e.g.
//
//	switchyard.yaml: listeners[1].kind: unknown listener kind "htp" (want http, grpc, internal, admin, metrics)
//
// It checks shapes and references only; filter configs are checked by the
// filters package when chains are built. Call ApplyDefaults first.
func (c *Config) Validate() error {
	p := &problems{}
	c.validateSettings(p)
	c.validateListeners(p)
	clusters := c.validateClusters(p)
	c.validateRoutes(p, clusters)
	if !schemeRe.MatchString(c.NameResolution.Scheme) {
		src := c.where("name_resolution")
		path := "name_resolution.scheme"
		if c.NameResolution.Scheme == "" {
			p.add(src, path, "required")
		} else {
			p.add(src, path, "invalid scheme %q", c.NameResolution.Scheme)
		}
	}
	components := c.validateComponents(p)
	c.validateSubscriptions(p, components)
	c.validateAccessControl(p)
	return errors.Join(p.errs...)
}

func (c *Config) validateSettings(p *problems) {
	switch {
	case c.AppID == "":
		p.add(c.where("app_id"), "app_id", "required (--app-id, SWITCHYARD_APP_ID or app_id in a config file)")
	case strings.ContainsAny(c.AppID, "./ "):
		p.add(c.where("app_id"), "app_id", "%q must not contain dots, slashes or spaces", c.AppID)
	}
	if !slices.Contains(appProtocols, c.AppProtocol) {
		p.add(c.where("app_protocol"), "app_protocol", "unknown protocol %q (want %s)", c.AppProtocol, strings.Join(appProtocols, ", "))
	}
	if c.Mode != ModeStandalone {
		p.add(c.where("mode"), "mode", "unsupported mode %q (only %s is supported)", c.Mode, ModeStandalone)
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		p.add(c.where("log_level"), "log_level", "unknown level %q (want %s)", c.LogLevel, strings.Join(logLevels, ", "))
	}
	for _, port := range []struct {
		key string
		v   int
	}{
		{"app_port", c.AppPort},
		{"dapr_http_port", c.DaprHTTPPort},
		{"dapr_grpc_port", c.DaprGRPCPort},
		{"dapr_internal_grpc_port", c.DaprInternalGRPCPort},
		{"metrics_port", c.MetricsPort},
		{"admin_port", c.AdminPort},
	} {
		if port.v < 0 || port.v > 65535 {
			p.add(c.where(port.key), port.key, "port %d out of range (0-65535)", port.v)
		}
	}
	if c.DaprHTTPMaxRequestSize <= 0 {
		p.add(c.where("dapr_http_max_request_size"), "dapr_http_max_request_size", "must be greater than 0 (MB)")
	}
	if c.DaprHTTPReadBufferSize <= 0 {
		p.add(c.where("dapr_http_read_buffer_size"), "dapr_http_read_buffer_size", "must be greater than 0 (KB)")
	}
	if c.GracefulShutdown < 0 {
		p.add(c.where("dapr_graceful_shutdown_seconds"), "dapr_graceful_shutdown_seconds", "must not be negative")
	}
	if c.PeerKeepalive != nil && *c.PeerKeepalive < 0 {
		p.add(c.where("peer_keepalive"), "peer_keepalive", "must not be negative")
	}
	if c.Procs < 0 {
		p.add(c.where("procs"), "procs", "must not be negative (0: as many as the load needs)")
	}
	if c.AppPipelineStall < 0 {
		p.add(c.where("app_pipeline_stall_after"), "app_pipeline_stall_after", "must not be negative")
	}
	if c.AppHealthTimeout < 0 {
		p.add(c.where("app_health_timeout"), "app_health_timeout", "must not be negative")
	}
	if c.AppChannelAddress == "" {
		p.add(c.where("app_channel_address"), "app_channel_address", "required")
	}
	for i, a := range c.DaprListenAddresses {
		if _, _, err := net.SplitHostPort(a); err == nil {
			p.add(c.where("dapr_listen_addresses"), fmt.Sprintf("dapr_listen_addresses[%d]", i), "%q: want a host or IP without a port", a)
		}
	}
}

func (c *Config) validateListeners(p *problems) {
	src := c.where("listeners")
	type bound struct {
		listener, host string
		port           int
	}
	var seen []bound
	names := map[string]int{}
	// Listeners built by ApplyDefaults come from the port settings, which
	// are checked on their own; only collisions between them are reported.
	builtin := c.origin["listeners"] == "defaults"
	for i, l := range c.Listeners {
		at := fmt.Sprintf("listeners[%d]", i)
		if builtin {
			at = fmt.Sprintf("listener %q", l.Name)
		}
		if l.Name == "" {
			p.add(src, at+".name", "required")
		} else if j, dup := names[l.Name]; dup {
			p.add(src, at+".name", "duplicate listener name %q (also listeners[%d])", l.Name, j)
		} else {
			names[l.Name] = i
		}
		if !slices.Contains(listenerKinds, l.Kind) {
			p.add(src, at+".kind", "unknown listener kind %q (want %s)", l.Kind, strings.Join(listenerKinds, ", "))
		}
		if len(l.Addresses) == 0 && l.Kind != ListenerSubscription {
			p.add(src, at+".addresses", "at least one host:port is required")
		}
		for j, a := range l.Addresses {
			aat := fmt.Sprintf("%s.addresses[%d]", at, j)
			if builtin {
				aat = at
			}
			host, port, err := splitHostPort(a)
			if err != nil {
				if !builtin {
					p.add(src, aat, "%v", err)
				}
				continue
			}
			if port == 0 {
				continue // a free port never collides
			}
			for _, b := range seen {
				if b.port == port && (b.host == host || wildcard(b.host) || wildcard(host)) {
					p.add(src, aat, "%q collides with listener %q on port %d", a, b.listener, port)
					break
				}
			}
			seen = append(seen, bound{l.Name, host, port})
		}
		for j, f := range l.Filters {
			fat := fmt.Sprintf("%s.filters[%d]", at, j)
			if f.Name == "" {
				p.add(src, fat+".name", "required")
			} else if f.Name == RouterFilter && j != len(l.Filters)-1 {
				p.add(src, fat, "the router must be the last filter")
			}
		}
	}
}

// splitHostPort parses "host:port" with a numeric port in range.
func splitHostPort(a string) (string, int, error) {
	host, ps, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", a, unwrapAddrErr(err))
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port %q is not a number", a, ps)
	}
	if port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %d out of range (0-65535)", a, port)
	}
	return host, port, nil
}

func unwrapAddrErr(err error) error {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return errors.New(ae.Err)
	}
	return err
}

func wildcard(host string) bool { return host == "" || host == "0.0.0.0" || host == "::" }

// validateClusters checks the clusters and returns the set of names routes
// may use (the local app cluster is always there).
func (c *Config) validateClusters(p *problems) map[string]bool {
	src := c.where("clusters")
	defined := map[string]bool{LocalAppCluster: true}
	names := map[string]int{}
	for i, cl := range c.Clusters {
		at := fmt.Sprintf("clusters[%d]", i)
		switch j, dup := names[cl.Name]; {
		case cl.Name == "":
			p.add(src, at+".name", "required")
		case cl.Name == LocalAppCluster:
			p.add(src, at+".name", "%q is reserved for the local app (built from the app_* settings)", LocalAppCluster)
		case dup:
			p.add(src, at+".name", "duplicate cluster name %q (also clusters[%d])", cl.Name, j)
		default:
			names[cl.Name] = i
			defined[cl.Name] = true
		}
		if !slices.Contains(clusterKinds, cl.Kind) {
			p.add(src, at+".kind", "unknown cluster kind %q (want %s)", cl.Kind, strings.Join(clusterKinds, ", "))
		}
		switch cl.Kind {
		case ClusterSidecar:
			if cl.AppID == "" {
				p.add(src, at+".app_id", "required for a sidecar cluster")
			}
		case ClusterHTTP, ClusterGRPCApp:
			if len(cl.Endpoints) == 0 {
				p.add(src, at+".endpoints", "at least one host:port is required for a %s cluster", cl.Kind)
			}
			if cl.AppID != "" {
				p.add(src, at+".app_id", "only for sidecar clusters")
			}
		}
		for j, e := range cl.Endpoints {
			if _, port, err := splitHostPort(e); err != nil {
				p.add(src, fmt.Sprintf("%s.endpoints[%d]", at, j), "%v", err)
			} else if port == 0 {
				p.add(src, fmt.Sprintf("%s.endpoints[%d]", at, j), "%q: port 0 cannot be dialled", e)
			}
		}
		if !slices.Contains(lbPolicies, cl.LBPolicy) {
			p.add(src, at+".lb_policy", "unknown policy %q (want %s)", cl.LBPolicy, strings.Join(lbPolicies, ", "))
		}
		if cl.MaxConcurrency < 0 {
			p.add(src, at+".max_concurrency", "must not be negative")
		}
		if cl.MaxConns < 0 {
			p.add(src, at+".max_conns_per_endpoint", "must not be negative")
		}
		if cl.PipelineStall < 0 {
			p.add(src, at+".pipeline_stall_after", "must not be negative")
		}
		if cl.ConnectTimeout < 0 {
			p.add(src, at+".connect_timeout", "must not be negative")
		}
		if cl.Timeout < 0 {
			p.add(src, at+".timeout", "must not be negative")
		}
	}
	return defined
}

func (c *Config) validateRoutes(p *problems, clusters map[string]bool) {
	src := c.where("routes")
	names := map[string]int{}
	for i, r := range c.Routes {
		at := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			if j, dup := names[r.Name]; dup {
				p.add(src, at+".name", "duplicate route name %q (also routes[%d])", r.Name, j)
			} else {
				names[r.Name] = i
			}
		}
		validateMatch(p, src, at+".match", r.Match)
		if r.Cluster != "" && len(r.WeightedClusters) > 0 {
			p.add(src, at, "set cluster or weighted_clusters, not both")
		}
		if r.Cluster != "" && !clusters[r.Cluster] {
			p.add(src, at, "cluster %q is not defined", r.Cluster)
		}
		for j, wc := range r.WeightedClusters {
			wat := fmt.Sprintf("%s.weighted_clusters[%d]", at, j)
			if wc.Name == "" {
				p.add(src, wat+".name", "required")
			} else if !clusters[wc.Name] {
				p.add(src, wat, "cluster %q is not defined", wc.Name)
			}
			if wc.Weight == 0 {
				p.add(src, wat+".weight", "must be greater than 0")
			}
		}
		if r.Timeout < 0 {
			p.add(src, at+".timeout", "must not be negative")
		}
	}
}

func validateMatch(p *problems, src, at string, m RouteMatch) {
	set := 0
	for _, s := range []string{m.Exact, m.Prefix, m.Glob, m.Regex} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		p.add(src, at, "set only one of exact, prefix, glob, regex")
	}
	for _, k := range []struct{ name, v string }{{"exact", m.Exact}, {"prefix", m.Prefix}, {"glob", m.Glob}} {
		if k.v != "" && !strings.HasPrefix(k.v, "/") {
			p.add(src, at+"."+k.name, "%q must start with \"/\" (route keys look like /invoke/<app-id>/method/<method>)", k.v)
		}
	}
	if m.Glob != "" {
		if err := checkGlob(m.Glob); err != nil {
			p.add(src, at+".glob", "%v", err)
		}
	}
	if m.Regex != "" {
		if _, err := regexp.Compile(m.Regex); err != nil {
			p.add(src, at+".regex", "invalid regex: %v", err)
		}
	}
	for j, v := range m.Verbs {
		if !slices.Contains(httpVerbs, strings.ToUpper(v)) {
			p.add(src, fmt.Sprintf("%s.verbs[%d]", at, j), "unknown verb %q", v)
		}
	}
	for j, h := range m.Headers {
		hat := fmt.Sprintf("%s.headers[%d]", at, j)
		if h.Name == "" {
			p.add(src, hat+".name", "required")
		}
		n := 0
		for _, s := range []string{h.Exact, h.Prefix, h.Regex} {
			if s != "" {
				n++
			}
		}
		if h.Present != nil {
			n++
		}
		if n > 1 {
			p.add(src, hat, "set only one of exact, prefix, regex, present")
		}
		if h.Regex != "" {
			if _, err := regexp.Compile(h.Regex); err != nil {
				p.add(src, hat+".regex", "invalid regex: %v", err)
			}
		}
	}
}

// checkGlob checks a route glob: '/'-separated segments, none empty except
// a trailing one; '*' inside a segment; '**' only as a whole segment.
func checkGlob(g string) error {
	segs := strings.Split(strings.TrimPrefix(g, "/"), "/")
	for i, s := range segs {
		if s == "" && i != len(segs)-1 {
			return fmt.Errorf("%q has an empty segment", g)
		}
		if strings.Contains(s, "**") && s != "**" {
			return fmt.Errorf("%q: \"**\" must be a whole segment (\"/**/\"), not part of %q", g, s)
		}
	}
	return nil
}

// validateComponents checks the components and returns their names.
func (c *Config) validateComponents(p *problems) map[string]bool {
	names := map[string]string{}
	for i, comp := range c.Components {
		src, at := c.where("components"), fmt.Sprintf("components[%d]", i)
		typ, name, initTO := at+".type", at+".name", at+".init_timeout"
		if comp.File != "" {
			src = fmt.Sprintf("%s: Component %q", comp.File, comp.Name)
			typ, name, initTO = "spec.type", "metadata.name", "spec.initTimeout"
		}
		if comp.Name == "" {
			p.add(src, name, "required")
		} else if other, dup := names[comp.Name]; dup {
			p.add(src, name, "duplicate component name %q (also %s)", comp.Name, other)
		} else {
			names[comp.Name] = firstNonEmpty(comp.File, fmt.Sprintf("components[%d]", i))
		}
		if !pubsubTypeRe.MatchString(comp.Type) {
			p.add(src, typ, "%q is not a supported component type (want pubsub.<kind>, e.g. pubsub.redis)", comp.Type)
		}
		if comp.InitTimeout < 0 {
			p.add(src, initTO, "must not be negative")
		}
	}
	set := map[string]bool{}
	for n := range names {
		set[n] = true
	}
	return set
}

func (c *Config) validateSubscriptions(p *problems, components map[string]bool) {
	for i, s := range c.Subscriptions {
		src, at := c.where("subscriptions"), fmt.Sprintf("subscriptions[%d]", i)
		pubsub, topic, route, rules := at+".pubsub", at+".topic", at+".route", at+".rules"
		if s.File != "" {
			src = fmt.Sprintf("%s: Subscription %q", s.File, s.Name)
			pubsub, topic, route, rules = "spec.pubsubname", "spec.topic", "spec.route", "spec.routes.rules"
		}
		if s.PubSub == "" {
			p.add(src, pubsub, "required")
		} else if !components[s.PubSub] {
			p.add(src, pubsub, "component %q is not defined", s.PubSub)
		}
		if s.Topic == "" {
			p.add(src, topic, "required")
		}
		if s.Route == "" && len(s.Rules) == 0 {
			p.add(src, route, "required (or routing rules)")
		}
		for j, r := range s.Rules {
			rat := fmt.Sprintf("%s[%d]", rules, j)
			if r.Match == "" {
				p.add(src, rat+".match", "required")
			}
			if r.Path == "" {
				p.add(src, rat+".path", "required")
			}
		}
	}
}

func (c *Config) validateAccessControl(p *problems) {
	ac := c.AccessControl
	if ac == nil {
		return
	}
	src := c.where("access_control")
	// Name fields as the file that set them does: Dapr's camelCase from a
	// Dapr Configuration, our snake_case otherwise.
	dapr := c.origin["access_control.dapr"] != ""
	n := func(ours, daprs string) string {
		if dapr {
			return daprs
		}
		return ours
	}
	root := n("access_control", "spec.accessControl")
	if !slices.Contains(aclActions, strings.ToLower(ac.DefaultAction)) {
		p.add(src, root+n(".default_action", ".defaultAction"), "unknown action %q (want allow or deny)", ac.DefaultAction)
	}
	for i, pol := range ac.Policies {
		at := fmt.Sprintf("%s.policies[%d]", root, i)
		if pol.AppID == "" {
			p.add(src, at+n(".app_id", ".appId"), "required")
		}
		if pol.TrustDomain == "" {
			p.add(src, at+n(".trust_domain", ".trustDomain"), "required")
		}
		if pol.Namespace == "" {
			p.add(src, at+".namespace", "required")
		}
		if pol.DefaultAction != "" && !slices.Contains(aclActions, strings.ToLower(pol.DefaultAction)) {
			p.add(src, at+n(".default_action", ".defaultAction"), "unknown action %q (want allow or deny)", pol.DefaultAction)
		}
		for j, op := range pol.Operations {
			oat := fmt.Sprintf("%s.operations[%d]", at, j)
			if op.Name == "" {
				p.add(src, oat+".name", "required")
			}
			if !slices.Contains(aclActions, strings.ToLower(op.Action)) {
				p.add(src, oat+".action", "unknown action %q (want allow or deny)", op.Action)
			}
			for k, v := range op.HTTPVerb {
				if !slices.Contains(httpVerbs, strings.ToUpper(v)) {
					p.add(src, fmt.Sprintf("%s%s[%d]", oat, n(".http_verb", ".httpVerb"), k), "unknown verb %q", v)
				}
			}
		}
	}
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
