package filters

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	reg "github.com/switchyard-proxy/switchyard/internal/registry"
)

// Handler handles one exchange: it fills ex.Resp, or returns an error that
// the listener turns into a Dapr-style error response.
type Handler interface {
	Handle(ctx context.Context, ex *Exchange) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, ex *Exchange) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, ex *Exchange) error { return f(ctx, ex) }

// Filter is one built link of a chain. Wrap is called once per configuration
// snapshot, never per request.
type Filter interface {
	Wrap(next Handler) Handler
}

// FilterFunc adapts a function to Filter.
type FilterFunc func(next Handler) Handler

// Wrap calls f.
func (f FilterFunc) Wrap(next Handler) Handler { return f(next) }

// Factory makes filters of one kind. NewConfig returns a pointer to the
// filter's config struct, which is decoded strictly (unknown fields are
// errors) from the YAML map or an xDS TypedStruct; if it implements
// Validate() error, that is called before Build. Build must do no per-request
// work and may return a Filter that also implements io.Closer.
type Factory interface {
	Name() string
	NewConfig() any
	Build(cfg any, env Env) (Filter, error)
}

// Validator is implemented by filter configs that check themselves.
type Validator interface {
	Validate() error
}

// Env is what a filter may use when it is built.
type Env struct {
	Logger    *zap.Logger
	AppID     string
	Namespace string
	Listener  string // name of the listener whose chain is being built
	Clusters  Clusters
	Routes    []config.Route // the snapshot's route table, compiled by the router
	Metrics   *stats.Registry
}

// Clusters is how filters (the router above all) reach upstreams; the
// cluster manager implements it.
type Clusters interface {
	// Cluster returns the configured cluster of that name, or nil.
	Cluster(name string) Handler
	// App returns the cluster for invoking appID: the local app for our own
	// id, otherwise the sidecar cluster of that id, created on first use.
	App(appID []byte) (Handler, error)
	// PubSub returns the cluster behind publish routes of that component, or
	// nil when there is no such component.
	PubSub(name []byte) Handler
}

var registry = reg.New[Factory]("filters", "filter")

// Register makes a filter factory available by its name. Call it from init.
// It panics on an empty or duplicate name.
func Register(f Factory) { registry.Register(f.Name(), f) }

// Lookup returns the factory registered under name.
func Lookup(name string) (Factory, bool) { return registry.Get(name) }

// Names lists the registered filter names, sorted.
func Names() []string { return registry.Names() }

// ErrUnknownFilter is returned when a chain names a filter nobody registered.
var ErrUnknownFilter = errors.New("filters: unknown filter")
