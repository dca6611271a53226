// Package registry is the one implementation behind switchyard's
// registries (filters, listener kinds, cluster kinds, component categories,
// resolver schemes, broker types): values registered by name from init(),
// looked up by name, registration panicking on an empty or duplicate name.
package registry

import (
	"fmt"
	"sort"
	"sync"
)

// Registry maps names to values of one kind.
type Registry[T any] struct {
	what string // what a name names, for panics: "filter", "scheme" ...
	pkg  string // the owning package, prefixed to panics
	mu   sync.RWMutex
	m    map[string]T
}

// New returns an empty registry. pkg prefixes panic messages ("filters"),
// what names the thing registered ("filter").
func New[T any](pkg, what string) *Registry[T] {
	return &Registry[T]{pkg: pkg, what: what, m: map[string]T{}}
}

// Register adds v under name. It panics on an empty or duplicate name.
func (r *Registry[T]) Register(name string, v T) {
	if name == "" {
		panic(fmt.Sprintf("%s: Register with an empty %s", r.pkg, r.what))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[name]; dup {
		panic(fmt.Sprintf("%s: %s %q registered twice", r.pkg, r.what, name))
	}
	r.m[name] = v
}

// Get returns the value registered under name.
func (r *Registry[T]) Get(name string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.m[name]
	return v, ok
}

// Names lists the registered names, sorted.
func (r *Registry[T]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for n := range r.m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
