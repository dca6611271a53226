package listeners

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

type running struct {
	spec  config.Listener
	l     Listener
	ref   *ChainRef
	chain *filters.Chain
}

// Manager applies snapshots to the running listeners and clusters.
type Manager struct {
	rt       *Runtime
	clusters *clusters.Manager
	drain    time.Duration

	mu      sync.Mutex
	running map[string]*running
}

// NewManager returns a manager with nothing running. drain is how long
// retired chains and clusters stay usable by in-flight requests.
func NewManager(rt *Runtime, drain time.Duration) *Manager {
	if rt.Logger == nil {
		rt.Logger = zap.NewNop()
	}
	m := &Manager{rt: rt, clusters: clusters.NewManager(rt.Logger.With(zap.String("scope", "clusters")), drain), drain: drain, running: map[string]*running{}}
	rt.mgr = m
	return m
}

// Clusters returns the cluster manager.
func (m *Manager) Clusters() *clusters.Manager { return m.clusters }

func clusterEnv(rt *Runtime, c *config.Config) clusters.Env {
	return clusters.Env{
		Logger: rt.Logger.With(zap.String("scope", "clusters")), AppID: c.AppID, Namespace: c.Namespace,
		AppAPIToken: c.AppAPIToken, NameResolution: c.NameResolution, Stats: rt.Stats,
	}
}

// Build builds the clusters and chains of snap without serving them: what
// `switchyard validate` runs. It returns the first error.
func Build(ctx context.Context, rt *Runtime, snap *config.Snapshot) error {
	m := clusters.NewManager(rt.Logger, 0)
	plan, err := m.Prepare(ctx, snap.Config, clusterEnv(rt, snap.Config))
	if err != nil {
		return err
	}
	defer plan.Abort()
	for i, spec := range snap.Config.Listeners {
		if _, ok := lookup(spec.Kind); !ok {
			return fmt.Errorf("listeners[%d] (%s): kind %q is not available in this build (have %v)", i, spec.Name, spec.Kind, Kinds())
		}
		if !chained(spec.Kind) {
			continue
		}
		ch, err := filters.BuildChain(spec.Filters, chainEnv(rt, snap.Config, spec, plan.Set))
		if err != nil {
			return fmt.Errorf("listeners[%d] (%s).%w", i, spec.Name, err)
		}
		_ = ch.Close()
	}
	return nil
}

// chained reports whether listeners of a kind run a filter chain.
func chained(kind string) bool {
	return kind != config.ListenerAdmin && kind != config.ListenerMetrics
}

func chainEnv(rt *Runtime, c *config.Config, spec config.Listener, set *clusters.Set) filters.Env {
	return filters.Env{
		Logger:    rt.Logger.With(zap.String("scope", "filters"), zap.String("listener", spec.Name)),
		AppID:     c.AppID,
		Namespace: c.Namespace,
		Listener:  spec.Name,
		Clusters:  set,
		Routes:    c.Routes,
		Metrics:   rt.Stats,
	}
}

// Apply serves snap. Either everything in it is built and swapped in, or
// nothing changes and the error says why. Listeners whose name, kind and
// addresses are unchanged keep their sockets and only get the new chain.
func (m *Manager) Apply(ctx context.Context, snap *config.Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg := snap.Config
	plan, err := m.clusters.Prepare(ctx, cfg, clusterEnv(m.rt, cfg))
	if err != nil {
		return err
	}
	chains := map[string]*filters.Chain{}
	abort := func(err error) error {
		for _, c := range chains {
			_ = c.Close()
		}
		plan.Abort()
		return err
	}
	for i, spec := range cfg.Listeners {
		if _, ok := lookup(spec.Kind); !ok {
			return abort(fmt.Errorf("listeners[%d] (%s): kind %q is not available in this build (have %v)", i, spec.Name, spec.Kind, Kinds()))
		}
		if !chained(spec.Kind) {
			continue
		}
		ch, err := filters.BuildChain(spec.Filters, chainEnv(m.rt, cfg, spec, plan.Set))
		if err != nil {
			return abort(fmt.Errorf("listeners[%d] (%s).%w", i, spec.Name, err))
		}
		chains[spec.Name] = ch
	}

	// Everything built: swap. Listeners that must be rebound are closed
	// first (their port may be reused), then new ones start.
	plan.Commit()
	m.rt.set.Store(plan.Set)
	m.rt.snap.Store(snap)

	keep := map[string]bool{}
	var retiredChains []*filters.Chain
	var toStart []config.Listener
	for _, spec := range cfg.Listeners {
		r, ok := m.running[spec.Name]
		if ok && reflect.DeepEqual(r.spec.Kind, spec.Kind) && reflect.DeepEqual(r.spec.Addresses, spec.Addresses) {
			keep[spec.Name] = true
			if ch := chains[spec.Name]; ch != nil {
				if r.chain != nil {
					retiredChains = append(retiredChains, r.chain)
				}
				r.ref.Store(ch)
				r.chain = ch
			}
			r.spec = spec
			continue
		}
		toStart = append(toStart, spec)
	}
	var errs []error
	for name, r := range m.running {
		if keep[name] {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, m.drain)
		if err := r.l.Close(cctx); err != nil {
			errs = append(errs, fmt.Errorf("closing listener %s: %w", name, err))
		}
		cancel()
		if r.chain != nil {
			retiredChains = append(retiredChains, r.chain)
		}
		delete(m.running, name)
	}
	for _, spec := range toStart {
		f, _ := lookup(spec.Kind)
		ref := &ChainRef{}
		ch := chains[spec.Name]
		if ch != nil {
			ref.Store(ch)
		}
		l, err := f.Start(spec, ref, m.rt)
		if err != nil {
			if ch != nil {
				_ = ch.Close()
			}
			errs = append(errs, fmt.Errorf("listener %s (%s): %w", spec.Name, spec.Kind, err))
			continue
		}
		m.running[spec.Name] = &running{spec: spec, l: l, ref: ref, chain: ch}
	}
	if len(retiredChains) > 0 {
		time.AfterFunc(m.drain, func() {
			for _, c := range retiredChains {
				_ = c.Close()
			}
		})
	}
	return errors.Join(errs...)
}

// Addrs returns the bound addresses of the named listener.
func (m *Manager) Addrs(name string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.running[name]
	if !ok {
		return nil
	}
	var out []string
	for _, a := range r.l.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// Describe lists the running listeners.
func (m *Manager) Describe() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.running))
	for name, r := range m.running {
		inf := Info{Name: name, Kind: r.spec.Kind}
		for _, a := range r.l.Addrs() {
			inf.Addresses = append(inf.Addresses, a.String())
		}
		out = append(out, inf)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close drains every listener (until ctx ends), then closes chains and
// clusters.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for name, r := range m.running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.l.Close(ctx); err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("listener %s: %w", name, err))
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, r := range m.running {
		if r.chain != nil {
			_ = r.chain.Close()
		}
	}
	m.running = map[string]*running{}
	errs = append(errs, m.clusters.Close())
	return errors.Join(errs...)
}
