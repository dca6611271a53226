// Package resolver is switchyard's pluggable name resolution, in grpc-go's
// shape: a Builder per scheme, registered from init(); a Resolver that
// pushes address updates into a Sink.
//
// Sidecar clusters ask for a Target (an app id in a namespace) and receive
// the internal gRPC addresses of that app's sidecars. Each sidecar also
// announces itself through the same builder (Announcer) so that its peers
// can find it.
package resolver

import (
	"errors"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/internal/registry"
)

// Target is what is resolved: an app id in a namespace.
type Target struct {
	AppID     string
	Namespace string
}

// Address is one endpoint: host:port of a sidecar's internal gRPC listener.
type Address struct {
	Addr string
	// Attributes a resolver may carry (zone, weight, ...).
	Attributes map[string]string
}

// State is a resolver's current answer.
type State struct {
	Addresses []Address
}

// Sink receives a resolver's updates. UpdateState may be called from any
// goroutine; an error means the update was rejected.
type Sink interface {
	UpdateState(State) error
	ReportError(error)
}

// Resolver watches one target. ResolveNow is a hint to resolve again soon
// (for example after a connection failure); it must not block.
type Resolver interface {
	ResolveNow()
	Close()
}

// BuildOptions carries what every resolver may need.
type BuildOptions struct {
	Logger *zap.Logger
	// Config is the scheme's settings from name_resolution.config, decoded
	// by the builder (strictly) into its own struct.
	Config map[string]any
}

// Builder builds resolvers of one scheme.
type Builder interface {
	Scheme() string
	Build(target Target, sink Sink, opts BuildOptions) (Resolver, error)
}

// Instance is what a sidecar announces about itself.
type Instance struct {
	AppID        string
	Namespace    string
	Host         string // address peers should dial
	InternalPort int    // the internal gRPC port actually bound
	HTTPPort     int
	AppPort      int
}

// Announcer is implemented by builders whose scheme has a registration side
// (mDNS, the local registry, Consul): Announce makes the instance findable
// until the returned stop is called (on shutdown).
type Announcer interface {
	Announce(inst Instance, opts BuildOptions) (stop func() error, err error)
}

// ConfigValidator is implemented by builders that can check their settings
// at config load, before anything is built.
type ConfigValidator interface {
	ValidateConfig(cfg map[string]any) error
}

// ErrNoAddresses is reported when a target has no endpoints.
var ErrNoAddresses = errors.New("resolver: no addresses")

var builders = registry.New[Builder]("resolver", "scheme")

// Register makes a builder available by its scheme. Call it from init. It
// panics on an empty or duplicate scheme.
func Register(b Builder) { builders.Register(b.Scheme(), b) }

// Get returns the builder of a scheme.
func Get(scheme string) (Builder, bool) { return builders.Get(scheme) }

// Schemes lists the registered schemes, sorted.
func Schemes() []string { return builders.Names() }
