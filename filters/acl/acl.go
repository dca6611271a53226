// Package acl is the filter that enforces Dapr's access control policies
// (accessControl in a Dapr Configuration) on the callee: which calling app
// may invoke which operation of this app, with which HTTP verb.
package acl

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// operation is one compiled rule.
type operation struct {
	allow bool           // the rule's action
	verbs []verbDecision // http_verb entries, in order
}

type verbDecision struct {
	verb  string
	allow bool
}

// policy is one app's compiled policy.
type policy struct {
	appID, trustDomain, namespace string
	hasDefault                    bool // default_action set: decisions count as "app"
	defaultAllow                  bool
	ops                           trieNode
	counters                      counters // labelled with this policy's identity
}

// counters are daprd's runtime_acl_* series for one label set.
type counters struct {
	appAllowed, appBlocked, globalAllowed, globalBlocked *stats.Counter
}

// Filter is a compiled access control list.
type Filter struct {
	enabled      bool // false: the spec was empty, everything is allowed
	defaultAllow bool
	trustDomain  string
	isHTTP       bool
	trustHeader  bool
	allListeners bool
	namespace    string // ours: the caller's when it sends none

	policies map[string]map[string]*policy // app id -> namespace -> policy
	unknown  counters                      // callers that match no policy
	metrics  bool
}

var _ filters.Filter = (*Filter)(nil)

func isAllow(a string) bool { return strings.EqualFold(a, ActionAllow) }

// New compiles c, which must be valid.
func New(c Config, env filters.Env) *Filter {
	f := &Filter{
		isHTTP:       c.AppProtocol != "grpc",
		trustHeader:  c.TrustCallerHeader,
		allListeners: c.AllListeners,
		namespace:    env.Namespace,
		policies:     map[string]map[string]*policy{},
	}
	if f.namespace == "" {
		f.namespace = "default"
	}
	ac := c.AccessControl
	if ac.TrustDomain == "" && ac.DefaultAction == "" && len(ac.Policies) == 0 {
		return f // daprd: no access control
	}
	f.enabled = true
	f.trustDomain = ac.TrustDomain
	if f.trustDomain == "" {
		f.trustDomain = DefaultTrustDomain
	}
	f.defaultAllow = isAllow(ac.DefaultAction)
	if ac.DefaultAction == "" {
		// daprd: deny, unless policies is present and empty.
		f.defaultAllow = ac.Policies != nil && len(ac.Policies) == 0
	}

	var mk func(app, td, ns string) counters
	if r := env.Metrics; r != nil {
		f.metrics = true
		appAllowed := r.Counter("runtime_acl_app_policy_action_allowed_total", "The number of requests allowed by the app specific action specified in the access control policy.", "app_id", "trustDomain", "namespace")
		globalAllowed := r.Counter("runtime_acl_global_policy_action_allowed_total", "The number of requests allowed by the global action specified in the access control policy.", "app_id", "trustDomain", "namespace")
		appBlocked := r.Counter("runtime_acl_app_policy_action_blocked_total", "The number of requests blocked by the app specific action specified in the access control policy.", "app_id", "trustDomain", "namespace")
		globalBlocked := r.Counter("runtime_acl_global_policy_action_blocked_total", "The number of requests blocked by the global action specified in the access control policy.", "app_id", "trustDomain", "namespace")
		mk = func(app, td, ns string) counters {
			return counters{appAllowed.With(app, td, ns), appBlocked.With(app, td, ns), globalAllowed.With(app, td, ns), globalBlocked.With(app, td, ns)}
		}
		f.unknown = mk("", "", "")
	}

	for _, p := range ac.Policies {
		byNS := f.policies[p.AppID]
		if byNS == nil {
			byNS = map[string]*policy{}
			f.policies[p.AppID] = byNS
		}
		cp := &policy{
			appID: p.AppID, trustDomain: p.TrustDomain, namespace: p.Namespace,
			hasDefault: p.DefaultAction != "", defaultAllow: isAllow(p.DefaultAction),
			ops: trieNode{seg: "/"},
		}
		for _, op := range p.Operations {
			name := op.Name
			if !strings.HasPrefix(name, "/") {
				name = "/" + name
			}
			if f.isHTTP {
				name = strings.ToLower(name)
			}
			o := &operation{allow: isAllow(op.Action)}
			for _, v := range op.HTTPVerb {
				o.verbs = append(o.verbs, verbDecision{verb: v, allow: isAllow(op.Action)})
			}
			cp.ops.put(name, o)
		}
		if mk != nil {
			cp.counters = mk(p.AppID, p.TrustDomain, p.Namespace)
		}
		byNS[p.Namespace] = cp // a later policy for the same app and namespace replaces it, as in daprd
	}
	return f
}

// Wrap returns the enforcing handler; with an empty spec it is next itself.
func (f *Filter) Wrap(next filters.Handler) filters.Handler {
	if !f.enabled {
		return next
	}
	return &handler{f: f, next: next}
}

type handler struct {
	f    *Filter
	next filters.Handler
}

// identity is the caller as the policy sees it; slices point into the exchange.
type identity struct {
	trustDomain, namespace, appID []byte
}

var spiffePrefix = []byte("spiffe://")

// parseSPIFFE reads spiffe://<trust domain>/ns/<namespace>/<app id>.
func parseSPIFFE(id []byte) (identity, bool) {
	rest, ok := bytes.CutPrefix(id, spiffePrefix)
	if !ok {
		return identity{}, false
	}
	td, rest, ok := bytes.Cut(rest, []byte("/"))
	if !ok || len(td) == 0 {
		return identity{}, false
	}
	rest, ok = bytes.CutPrefix(rest, []byte("ns/"))
	if !ok {
		return identity{}, false
	}
	ns, app, ok := bytes.Cut(rest, []byte("/"))
	if !ok || len(ns) == 0 || len(app) == 0 || bytes.IndexByte(app, '/') >= 0 {
		return identity{}, false
	}
	return identity{trustDomain: td, namespace: ns, appID: app}, true
}

func (h *handler) Handle(ctx context.Context, ex *filters.Exchange) error {
	f := h.f
	if ex.Kind != filters.KindInvoke || (ex.Protocol != filters.ProtocolInternal && !f.allListeners) {
		return h.next.Handle(ctx, ex)
	}
	var id identity
	known := false
	switch {
	case len(ex.PeerID) > 0:
		var ok bool
		if id, ok = parseSPIFFE(ex.PeerID); !ok {
			// daprd refuses a peer certificate it cannot read as a Dapr id.
			return denied(ex, "", "invalid SPIFFE id "+string(ex.PeerID))
		}
		known = true
	case f.trustHeader && len(ex.CallerAppID) > 0:
		id = identity{trustDomain: []byte(f.trustDomain), namespace: ex.CallerNamespace, appID: ex.CallerAppID}
		if len(id.namespace) == 0 {
			id.namespace = []byte(f.namespace)
		}
		known = true
	}

	allow, app, c := f.decide(id, known, ex)
	if f.metrics {
		switch {
		case allow && app:
			c.appAllowed.Inc()
		case allow:
			c.globalAllowed.Inc()
		case app:
			c.appBlocked.Inc()
		default:
			c.globalBlocked.Inc()
		}
	}
	if !allow {
		return denied(ex, callerURL(id, known), "")
	}
	return h.next.Handle(ctx, ex)
}

// decide applies daprd's rules; app reports whether the app policy's
// default action was in force (daprd's "app" metrics).
func (f *Filter) decide(id identity, known bool, ex *filters.Exchange) (allow, app bool, c *counters) {
	c = &f.unknown
	if !known {
		return f.defaultAllow, false, c
	}
	p := f.policies[string(id.appID)][string(id.namespace)]
	if p == nil || p.trustDomain != string(id.trustDomain) {
		return f.defaultAllow, false, c
	}
	c = &p.counters
	allow = f.defaultAllow
	if p.hasDefault {
		allow, app = p.defaultAllow, true
	}
	op := f.lookup(p, ex.Method)
	if op == nil {
		return allow, app, c
	}
	if !f.isHTTP {
		return op.allow, app, c
	}
	verb := ex.Req.Header.Method()
	for _, v := range op.verbs {
		if v.verb == string(verb) {
			return v.allow, app, c
		}
	}
	for _, v := range op.verbs {
		if v.verb == "*" {
			return v.allow, app, c
		}
	}
	return allow, app, c
}

// lookup searches the policy's trie for the invoked method, with a leading
// '/' and, for HTTP apps, lower-cased, without allocating for methods of up
// to 256 ASCII bytes.
func (f *Filter) lookup(p *policy, method []byte) *operation {
	var buf [257]byte
	var op []byte
	if len(method) < len(buf) && isASCII(method) {
		op = buf[:0]
		if len(method) == 0 || method[0] != '/' {
			op = append(op, '/')
		}
		for _, c := range method {
			if f.isHTTP && 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			op = append(op, c)
		}
	} else {
		s := string(method)
		if !strings.HasPrefix(s, "/") {
			s = "/" + s
		}
		if f.isHTTP {
			s = strings.ToLower(s)
		}
		op = []byte(s)
	}
	return p.ops.search(op)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func callerURL(id identity, known bool) string {
	if !known {
		return ""
	}
	return "spiffe://" + string(id.trustDomain) + "/ns/" + string(id.namespace) + "/" + string(id.appID)
}

// denied builds daprd's refusal (only on the refusing path).
func denied(ex *filters.Exchange, caller, reason string) error {
	if reason != "" {
		return filters.NewError(filters.ErrCodePermissionDenied, http.StatusForbidden, codes.PermissionDenied,
			"acl: access control policy has denied access: %s", reason)
	}
	return filters.NewError(filters.ErrCodePermissionDenied, http.StatusForbidden, codes.PermissionDenied,
		"acl: access control policy has denied access to id: %s operation: %s verb: %s", caller, ex.Method, ex.Req.Header.Method())
}
