// Package listeners owns everything that accepts traffic. Each listener kind
// lives in a sub-package and registers a Factory; the Manager applies
// configuration snapshots: it builds the clusters and every listener's chain,
// and only when all of them built does it swap them in (atomically, per
// listener), start new listeners and drain removed ones. In-flight requests
// finish on the chain they started with.
package listeners

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/internal/registry"
)

// Listener is a running listener.
type Listener interface {
	// Addrs are the addresses actually bound.
	Addrs() []net.Addr
	// Close stops accepting and waits for in-flight requests until ctx ends.
	Close(ctx context.Context) error
}

// Factory starts listeners of one kind.
type Factory interface {
	Kind() string
	Start(spec config.Listener, chain *ChainRef, rt *Runtime) (Listener, error)
}

var factories = registry.New[Factory]("listeners", "kind")

// Register makes a listener kind available. Call it from init; it panics on
// an empty or duplicate kind.
func Register(f Factory) { factories.Register(f.Kind(), f) }

func lookup(kind string) (Factory, bool) { return factories.Get(kind) }

// Kinds lists the registered listener kinds.
func Kinds() []string { return factories.Names() }

// ChainRef is the chain a listener serves with, swapped whole on a new
// snapshot. Load it once per request.
type ChainRef struct{ p atomic.Pointer[filters.Chain] }

// Load returns the current chain.
func (r *ChainRef) Load() *filters.Chain { return r.p.Load() }

// Store swaps in a new chain.
func (r *ChainRef) Store(c *filters.Chain) { r.p.Store(c) }

// Health is the readiness of the sidecar.
type Health struct {
	app      atomic.Bool // the app port accepts connections (or there is no app)
	outbound atomic.Bool // listeners are up
	once     sync.Once
	ready    chan struct{}
	opened   sync.Once // closes ready, once
}

func (h *Health) init() { h.once.Do(func() { h.ready = make(chan struct{}) }) }

// SetAppReady records that the app was discovered; the first true closes
// AppReady's channel.
func (h *Health) SetAppReady(v bool) {
	h.init()
	h.app.Store(v)
	if v {
		h.opened.Do(func() { close(h.ready) })
	}
}

// AppReady is closed once the app has been discovered (listeners that talk
// to the app, like subscriptions, wait for it).
func (h *Health) AppReady() <-chan struct{} {
	h.init()
	return h.ready
}

// SetOutboundReady records that the listeners are serving.
func (h *Health) SetOutboundReady(v bool) { h.outbound.Store(v) }

// Ready is true when the sidecar is ready to serve (healthz 204).
func (h *Health) Ready() bool { return h.app.Load() && h.outbound.Load() }

// OutboundReady is true once the listeners serve (healthz/outbound 204).
func (h *Health) OutboundReady() bool { return h.outbound.Load() }

// Runtime is what every listener shares: the current snapshot and
// clusters, readiness, metrics, metadata and the shutdown trigger.
type Runtime struct {
	Logger  *zap.Logger
	Version string
	Health  Health
	Stats   *stats.Registry
	// Shutdown asks the process to shut down gracefully (POST /v1.0/shutdown).
	Shutdown func()

	snap          atomic.Pointer[config.Snapshot]
	set           atomic.Pointer[clusters.Set]
	extended      sync.Map // metadata attributes set with PUT /v1.0/metadata/{key}
	subscriptions atomic.Pointer[SubscriptionLister]
	mgr           *Manager
}

// Snapshot returns the snapshot being served.
func (rt *Runtime) Snapshot() *config.Snapshot { return rt.snap.Load() }

// Clusters returns the cluster set being served.
func (rt *Runtime) Clusters() *clusters.Set { return rt.set.Load() }

// SetExtended records a metadata attribute.
func (rt *Runtime) SetExtended(key, value string) { rt.extended.Store(key, value) }

// Listeners describes the running listeners (name, kind, addresses).
func (rt *Runtime) Listeners() []Info {
	if rt.mgr == nil {
		return nil
	}
	return rt.mgr.Describe()
}

// Info describes one running listener.
type Info struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Addresses []string `json:"addresses"`
}
