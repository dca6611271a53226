// Package router is the terminal filter of every chain: it matches the
// exchange's logical route key (plus verb and headers) against the route
// table compiled from the snapshot, and hands the exchange to a cluster.
// With no matching route it applies daprd's defaults: invoke of our own app
// id goes to the local app, of another id to that id's sidecar cluster;
// publish goes to the pub/sub component of that name; a delivery goes to the
// local app.
package router

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

type route struct {
	key      keyMatcher
	verbs    []string // upper case; empty: any
	headers  []headerMatcher
	targets  []filters.Handler
	cumul    []uint32 // cumulative weights, for a split
	total    uint32
	info     filters.RouteInfo
	name     string
	clusters []string
}

// Router is the built router filter.
type Router struct {
	routes   []route
	clusters filters.Clusters
	local    filters.Handler
}

var _ filters.Filter = (*Router)(nil)
var _ filters.Handler = (*Router)(nil)

// New compiles the route table. Every cluster a route names must exist.
func New(routes []config.Route, cs filters.Clusters) (*Router, error) {
	r := &Router{clusters: cs}
	if cs != nil {
		r.local = cs.Cluster(config.LocalAppCluster)
	}
	for i, rc := range routes {
		cr, err := compile(rc, cs)
		if err != nil {
			return nil, fmt.Errorf("router: routes[%d] (%s): %w", i, rc.Name, err)
		}
		r.routes = append(r.routes, cr)
	}
	return r, nil
}

func compile(rc config.Route, cs filters.Clusters) (route, error) {
	km, err := compileKey(rc.Match)
	if err != nil {
		return route{}, fmt.Errorf("match: %w", err)
	}
	rt := route{key: km, name: rc.Name}
	for _, v := range rc.Match.Verbs {
		rt.verbs = append(rt.verbs, strings.ToUpper(v))
	}
	for j, h := range rc.Match.Headers {
		hm, err := compileHeader(h)
		if err != nil {
			return route{}, fmt.Errorf("match.headers[%d]: %w", j, err)
		}
		rt.headers = append(rt.headers, hm)
	}
	add := func(name string, weight uint32) error {
		var h filters.Handler
		if cs != nil {
			h = cs.Cluster(name)
		}
		if h == nil {
			return fmt.Errorf("cluster %q is not defined", name)
		}
		rt.total += weight
		rt.targets = append(rt.targets, h)
		rt.cumul = append(rt.cumul, rt.total)
		rt.clusters = append(rt.clusters, name)
		return nil
	}
	switch {
	case rc.Cluster != "" && len(rc.WeightedClusters) > 0:
		return route{}, fmt.Errorf("set cluster or weighted_clusters, not both")
	case rc.Cluster != "":
		if err := add(rc.Cluster, 1); err != nil {
			return route{}, err
		}
	case len(rc.WeightedClusters) > 0:
		for _, wc := range rc.WeightedClusters {
			if wc.Weight == 0 {
				continue
			}
			if err := add(wc.Name, wc.Weight); err != nil {
				return route{}, err
			}
		}
		if rt.total == 0 {
			return route{}, fmt.Errorf("weighted_clusters: all weights are 0")
		}
	default:
		// no cluster: the route only sets a timeout or idempotency and the
		// default target applies
	}
	rt.info = filters.RouteInfo{Name: rc.Name, Timeout: rc.Timeout.D(), Idempotent: rc.Idempotent}
	return rt, nil
}

// Wrap makes the router the end of the chain; next is ignored.
func (r *Router) Wrap(filters.Handler) filters.Handler { return r }

// Handle routes ex to its upstream.
func (r *Router) Handle(ctx context.Context, ex *filters.Exchange) error {
	for i := range r.routes {
		rt := &r.routes[i]
		if !rt.matches(ex) {
			continue
		}
		ex.Route = &rt.info
		ex.Timeout = rt.info.Timeout
		ex.Idempotent = rt.info.Idempotent
		switch len(rt.targets) {
		case 0:
			return r.defaultRoute(ctx, ex)
		case 1:
			return rt.targets[0].Handle(ctx, ex)
		}
		n := rand.Uint32N(rt.total)
		for j, c := range rt.cumul {
			if n < c {
				return rt.targets[j].Handle(ctx, ex)
			}
		}
		return rt.targets[len(rt.targets)-1].Handle(ctx, ex)
	}
	return r.defaultRoute(ctx, ex)
}

func (rt *route) matches(ex *filters.Exchange) bool {
	if !rt.key.match(ex.Key) {
		return false
	}
	if len(rt.verbs) > 0 {
		verb := ex.Req.Header.Method()
		ok := false
		for _, v := range rt.verbs {
			if string(verb) == v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for j := range rt.headers {
		if !rt.headers[j].match(&ex.Req.Header) {
			return false
		}
	}
	return true
}

// ErrNoRoute answers a request whose kind has no default target.
var ErrNoRoute = filters.NewError(filters.ErrCodeNotFound, http.StatusNotFound, codes.NotFound, "router: no route matches and the request has no default target")

func (r *Router) defaultRoute(ctx context.Context, ex *filters.Exchange) error {
	switch ex.Kind {
	case filters.KindInvoke:
		h, err := r.clusters.App(ex.AppID)
		if err != nil {
			return err
		}
		return h.Handle(ctx, ex)
	case filters.KindPublish:
		h := r.clusters.PubSub(ex.PubSub)
		if h == nil {
			return filters.NewError(filters.ErrCodePubSubNotFound, http.StatusNotFound, codes.InvalidArgument,
				"pubsub %s not found", ex.PubSub)
		}
		return h.Handle(ctx, ex)
	case filters.KindDeliver:
		if r.local != nil {
			return r.local.Handle(ctx, ex)
		}
	}
	return ErrNoRoute
}
