// Package clusters owns everything that sends traffic out: the cluster
// manager, the registry of cluster kinds, and (in sub-packages) the HTTP
// cluster, resolvers and brokers.
//
// The manager applies a configuration: it builds the clusters it names
// (keeping those whose settings did not change, so their connection pools
// survive), builds pub/sub components, and returns a Set, the immutable view
// of one snapshot that filters reach through filters.Clusters. Sidecar
// clusters of remote app ids are created on first use and shared by Sets.
package clusters

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/clusters/httpcluster"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/internal/registry"
)

// Cluster is a built cluster.
type Cluster interface {
	filters.Handler
	Close() error
}

// Env is what cluster builders may use.
type Env struct {
	Logger         *zap.Logger
	AppID          string
	Namespace      string
	AppAPIToken    string
	NameResolution config.NameResolution
	Stats          *stats.Registry
	// Config is the whole configuration being applied (read only).
	Config *config.Config
}

// Builder builds clusters of one kind (config.Cluster.Kind).
type Builder interface {
	Kind() string
	Build(cfg config.Cluster, env Env) (Cluster, error)
}

// ComponentBuilder builds the cluster behind a Dapr component of one
// category ("pubsub" for pubsub.* types).
type ComponentBuilder interface {
	Category() string
	Build(ctx context.Context, comp config.Component, env Env) (Cluster, error)
}

var (
	kinds      = registry.New[Builder]("clusters", "kind")
	components = registry.New[ComponentBuilder]("clusters", "component category")
)

// RegisterKind makes a cluster kind available. Call it from init; it panics
// on an empty or duplicate kind.
func RegisterKind(b Builder) { kinds.Register(b.Kind(), b) }

// RegisterComponents makes a component category available. Call it from
// init; it panics on an empty or duplicate category.
func RegisterComponents(b ComponentBuilder) { components.Register(b.Category(), b) }

func init() { RegisterKind(httpKind{}) }

// httpKind builds HTTP clusters.
type httpKind struct{}

func (httpKind) Kind() string { return config.ClusterHTTP }
func (httpKind) Build(c config.Cluster, env Env) (Cluster, error) {
	return httpcluster.New(httpcluster.Options{
		Name: c.Name, AppID: env.AppID, Endpoints: c.Endpoints, LBPolicy: c.LBPolicy,
		MaxConcurrency: c.MaxConcurrency, MaxConns: c.MaxConns, PipelineConns: c.PipelineConns, PipelineStall: c.PipelineStall.D(),
		ConnectTimeout: c.ConnectTimeout.D(), Timeout: c.Timeout.D(), AppAPIToken: env.AppAPIToken, Stats: env.Stats,
	})
}

// ComponentInfo describes a loaded component, for the metadata API.
type ComponentInfo struct {
	Name         string
	Type         string
	Version      string
	Capabilities []string
}

type entry struct {
	cfg config.Cluster
	c   Cluster
}

type compEntry struct {
	cfg config.Component
	c   Cluster
}

// Manager builds and keeps clusters across snapshots.
type Manager struct {
	log   *zap.Logger
	drain time.Duration

	mu      sync.Mutex
	env     Env
	named   map[string]*entry
	comps   map[string]*compEntry
	sidecar *appClusters
	current atomic.Pointer[Set]
}

// NewManager returns an empty manager. drain is how long a cluster that a
// new snapshot removed stays open for requests still using it.
func NewManager(log *zap.Logger, drain time.Duration) *Manager {
	if log == nil {
		log = zap.NewNop()
	}
	return &Manager{log: log, drain: drain, named: map[string]*entry{}, comps: map[string]*compEntry{}}
}

// LocalApp returns the cluster config of the local app, built from the
// app_* settings, or false when no app port is set.
func LocalApp(c *config.Config) (config.Cluster, bool) {
	if c.AppPort == 0 {
		return config.Cluster{}, false
	}
	host := c.AppChannelAddress
	if host == "" {
		host = "127.0.0.1"
	}
	k := config.ClusterHTTP
	if c.AppProtocol == "grpc" {
		k = config.ClusterGRPCApp
	}
	return config.Cluster{
		Name: config.LocalAppCluster, Kind: k,
		Endpoints:      []string{net.JoinHostPort(host, strconv.Itoa(c.AppPort))},
		MaxConcurrency: max(c.AppMaxConcurrency, 0),
		PipelineConns:  c.AppPipelineConns,
		PipelineStall:  c.AppPipelineStall,
	}, true
}

// Plan is a configuration's clusters, built but not yet serving. Commit
// makes it current; Abort closes what it built.
type Plan struct {
	m       *Manager
	env     Env
	named   map[string]*entry
	comps   map[string]*compEntry
	fresh   []Cluster
	sidecar *appClusters
	// Set is the view of the plan's clusters for building chains.
	Set *Set
}

// Prepare builds the clusters and components of cfg that differ from the
// current ones. Nothing changes until Commit. Only one plan may be pending.
func (m *Manager) Prepare(ctx context.Context, cfg *config.Config, env Env) (*Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	env.Config = cfg
	if env.Logger == nil {
		env.Logger = m.log
	}
	want := append([]config.Cluster(nil), cfg.Clusters...)
	if app, ok := LocalApp(cfg); ok {
		want = append(want, app)
	}
	p := &Plan{m: m, env: env, named: map[string]*entry{}, comps: map[string]*compEntry{}}
	fail := func(err error) (*Plan, error) {
		p.Abort()
		return nil, err
	}
	sameEnv := m.env.AppAPIToken == env.AppAPIToken && m.env.AppID == env.AppID
	for _, cc := range want {
		if cc.Kind == "" {
			cc.Kind = config.ClusterHTTP
		}
		if old, ok := m.named[cc.Name]; ok && sameEnv && reflect.DeepEqual(old.cfg, cc) {
			p.named[cc.Name] = old
			continue
		}
		b, ok := kinds.Get(cc.Kind)
		if !ok {
			return fail(fmt.Errorf("clusters: %s: kind %q is not available in this build (have %v)", cc.Name, cc.Kind, kinds.Names()))
		}
		c, err := b.Build(cc, env)
		if err != nil {
			return fail(fmt.Errorf("clusters: %s: %w", cc.Name, err))
		}
		p.fresh = append(p.fresh, c)
		p.named[cc.Name] = &entry{cfg: cc, c: c}
	}
	for _, comp := range cfg.Components {
		if old, ok := m.comps[comp.Name]; ok && sameEnv && reflect.DeepEqual(old.cfg, comp) {
			p.comps[comp.Name] = old
			continue
		}
		category, _, _ := strings.Cut(comp.Type, ".")
		b, ok := components.Get(category)
		if !ok {
			err := fmt.Errorf("clusters: component %s: type %s is not available in this build", comp.Name, comp.Type)
			if comp.IgnoreErrors {
				m.log.Warn("component skipped (ignoreErrors)", zap.String("component", comp.Name), zap.Error(err))
				continue
			}
			return fail(err)
		}
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if t := comp.InitTimeout.D(); t > 0 {
			cctx, cancel = context.WithTimeout(ctx, t)
		}
		c, err := b.Build(cctx, comp, env)
		cancel()
		if err != nil {
			err = fmt.Errorf("clusters: component %s (%s): %w", comp.Name, comp.Type, err)
			if comp.IgnoreErrors {
				m.log.Warn("component failed to initialize, ignored (ignoreErrors)", zap.String("component", comp.Name), zap.Error(err))
				continue
			}
			return fail(err)
		}
		p.fresh = append(p.fresh, c)
		p.comps[comp.Name] = &compEntry{cfg: comp, c: c}
	}
	p.sidecar = m.sidecar
	if m.sidecar == nil || !reflect.DeepEqual(m.env.NameResolution, env.NameResolution) || !sameEnv {
		p.sidecar = newAppClusters(env)
	}
	s := &Set{appID: env.AppID, named: map[string]filters.Handler{}, pubsubs: map[string]filters.Handler{}, apps: p.sidecar}
	for n, e := range p.named {
		s.named[n] = e.c
	}
	for n, e := range p.comps {
		s.pubsubs[n] = e.c
		s.components = append(s.components, ComponentInfo{Name: n, Type: e.cfg.Type, Version: e.cfg.Version, Capabilities: capabilities(e.c)})
	}
	sort.Slice(s.components, func(i, j int) bool { return s.components[i].Name < s.components[j].Name })
	s.local = s.named[config.LocalAppCluster]
	p.Set = s
	return p, nil
}

// Abort closes what the plan built.
func (p *Plan) Abort() {
	for _, c := range p.fresh {
		_ = c.Close()
	}
	if p.sidecar != nil && p.sidecar != p.m.sidecar {
		_ = p.sidecar.close()
	}
	p.fresh = nil
}

// Commit makes the plan current; clusters it no longer uses are closed
// after the drain period.
func (p *Plan) Commit() {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var retired []Cluster
	for name, e := range m.named {
		if n, ok := p.named[name]; !ok || n != e {
			retired = append(retired, e.c)
		}
	}
	for name, e := range m.comps {
		if n, ok := p.comps[name]; !ok || n != e {
			retired = append(retired, e.c)
		}
	}
	if m.sidecar != nil && m.sidecar != p.sidecar {
		retired = append(retired, closerFunc(m.sidecar.close))
	}
	m.retire(retired)
	m.env, m.named, m.comps, m.sidecar = p.env, p.named, p.comps, p.sidecar
	m.current.Store(p.Set)
}

// Current returns the Set of the last successful Apply, or nil.
func (m *Manager) Current() *Set { return m.current.Load() }

func (m *Manager) retire(cs []Cluster) {
	if len(cs) == 0 {
		return
	}
	time.AfterFunc(m.drain, func() {
		for _, c := range cs {
			if err := c.Close(); err != nil {
				m.log.Warn("closing a retired cluster", zap.Error(err))
			}
		}
	})
}

// Close closes every cluster now.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, e := range m.named {
		errs = append(errs, e.c.Close())
	}
	for _, e := range m.comps {
		errs = append(errs, e.c.Close())
	}
	if m.sidecar != nil {
		errs = append(errs, m.sidecar.close())
	}
	m.named, m.comps, m.sidecar = map[string]*entry{}, map[string]*compEntry{}, nil
	return errors.Join(errs...)
}

// Capabilities is implemented by components that report features for the
// metadata API.
type Capabilities interface {
	Capabilities() []string
}

func capabilities(c Cluster) []string {
	if cp, ok := c.(Capabilities); ok {
		return cp.Capabilities()
	}
	return nil
}

type closerFunc func() error

func (f closerFunc) Handle(context.Context, *filters.Exchange) error { return nil }
func (f closerFunc) Close() error                                    { return f() }

// Set is the immutable view of the clusters of one snapshot.
type Set struct {
	appID      string
	named      map[string]filters.Handler
	pubsubs    map[string]filters.Handler
	local      filters.Handler
	apps       *appClusters
	components []ComponentInfo
}

var _ filters.Clusters = (*Set)(nil)

// Cluster returns the named cluster, or nil.
func (s *Set) Cluster(name string) filters.Handler { return s.named[name] }

// ErrNoAppChannel answers invocations of our own id when no app port is set.
var ErrNoAppChannel = filters.NewError(filters.ErrCodeDirectInvoke, http.StatusInternalServerError, codes.Internal,
	"failed to invoke: no app channel: the sidecar has no app port (--app-port)")

// App returns the cluster for invoking id.
func (s *Set) App(id []byte) (filters.Handler, error) {
	if string(id) == s.appID {
		if s.local == nil {
			return nil, ErrNoAppChannel
		}
		return s.local, nil
	}
	return s.apps.get(id)
}

// PubSub returns the publish cluster of a component, or nil.
func (s *Set) PubSub(name []byte) filters.Handler { return s.pubsubs[string(name)] }

// Components lists the loaded components.
func (s *Set) Components() []ComponentInfo { return s.components }

// Names lists the configured clusters, sorted.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.named))
	for n := range s.named {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// RemoteApps lists the app ids whose sidecar clusters exist.
func (s *Set) RemoteApps() []string { return s.apps.names() }

// appClusters holds the sidecar clusters of remote app ids, created on
// first use. Reads are lock-free (copy-on-write map).
type appClusters struct {
	env Env
	mu  sync.Mutex
	m   atomic.Pointer[map[string]Cluster]
}

func newAppClusters(env Env) *appClusters {
	a := &appClusters{env: env}
	empty := map[string]Cluster{}
	a.m.Store(&empty)
	return a
}

func (a *appClusters) get(id []byte) (filters.Handler, error) {
	if c, ok := (*a.m.Load())[string(id)]; ok {
		return c, nil
	}
	if len(id) == 0 {
		return nil, filters.NewError(filters.ErrCodeDirectInvoke, http.StatusBadRequest, codes.InvalidArgument, "failed to invoke: app id is empty")
	}
	b, ok := kinds.Get(config.ClusterSidecar)
	if !ok {
		return nil, filters.NewError(filters.ErrCodeDirectInvoke, http.StatusInternalServerError, codes.Unimplemented,
			"failed to invoke, id: %s, err: invoking other app ids needs sidecar clusters, which this build does not include", id)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := *a.m.Load()
	if c, ok := cur[string(id)]; ok {
		return c, nil
	}
	name := string(id)
	c, err := b.Build(config.Cluster{Name: "sidecar:" + name, Kind: config.ClusterSidecar, AppID: name}, a.env)
	if err != nil {
		return nil, filters.NewError(filters.ErrCodeDirectInvoke, http.StatusInternalServerError, codes.Unavailable,
			"failed to invoke, id: %s, err: %v", name, err)
	}
	next := make(map[string]Cluster, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[name] = c
	a.m.Store(&next)
	return c, nil
}

func (a *appClusters) names() []string {
	m := *a.m.Load()
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (a *appClusters) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, c := range *a.m.Load() {
		errs = append(errs, c.Close())
	}
	empty := map[string]Cluster{}
	a.m.Store(&empty)
	return errors.Join(errs...)
}
