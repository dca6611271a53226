package filters

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters/stats"
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

var (
	registryMu sync.RWMutex
	registry   = map[string]Factory{}
)

// Register makes a filter factory available by its name. Call it from init.
// It panics on an empty or duplicate name.
func Register(f Factory) {
	name := f.Name()
	if name == "" {
		panic("filters: Register with an empty name")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("filters: filter %q registered twice", name))
	}
	registry[name] = f
}

// Lookup returns the factory registered under name.
func Lookup(name string) (Factory, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	f, ok := registry[name]
	return f, ok
}

// Names lists the registered filter names, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ErrUnknownFilter is returned when a chain names a filter nobody registered.
var ErrUnknownFilter = errors.New("filters: unknown filter")
