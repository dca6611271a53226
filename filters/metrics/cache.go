package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// Status codes 100..599 each get a slot; anything else shares the last one,
// labelled "other".
const (
	minStatus  = 100
	maxStatus  = 599
	numStatus  = maxStatus - minStatus + 2
	otherLabel = "other"
)

var statusLabels = func() (l [numStatus]string) {
	for i := range numStatus - 1 {
		l[i] = strconv.Itoa(minStatus + i)
	}
	l[numStatus-1] = otherLabel
	return l
}()

func statusIndex(code int) int {
	if code < minStatus || code > maxStatus {
		return numStatus - 1
	}
	return code - minStatus
}

// statusTable resolves the series of one status code once; afterwards a
// lookup is one atomic load.
type statusTable[T any] struct {
	mk    func(status string) *T
	mu    sync.Mutex
	slots [numStatus]atomic.Pointer[T]
}

func (t *statusTable[T]) get(code int) *T {
	i := statusIndex(code)
	if p := t.slots[i].Load(); p != nil {
		return p
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.slots[i].Load(); p != nil {
		return p
	}
	p := t.mk(statusLabels[i])
	t.slots[i].Store(p)
	return p
}

// appTable maps app ids to their series: a copy-on-write map read without
// locks, holding at most max ids; further ids share the "other" entry.
type appTable[T any] struct {
	mk    func(appID string) *T
	max   int
	m     atomic.Pointer[map[string]*T]
	mu    sync.Mutex
	other atomic.Pointer[T]
}

func newAppTable[T any](max int, mk func(string) *T) *appTable[T] {
	t := &appTable[T]{mk: mk, max: max}
	m := map[string]*T{}
	t.m.Store(&m)
	return t
}

func (t *appTable[T]) get(id []byte) *T {
	if e, ok := (*t.m.Load())[string(id)]; ok {
		return e
	}
	if o := t.other.Load(); o != nil {
		return o // full: unknown ids go to "other" without taking the lock
	}
	return t.slow(id)
}

func (t *appTable[T]) slow(id []byte) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.m.Load()
	if e, ok := old[string(id)]; ok {
		return e
	}
	if len(old) >= t.max {
		o := t.other.Load()
		if o == nil {
			o = t.mk(otherLabel)
			t.other.Store(o)
		}
		return o
	}
	m := make(map[string]*T, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	e := t.mk(string(id))
	m[string(id)] = e
	t.m.Store(&m)
	return e
}
