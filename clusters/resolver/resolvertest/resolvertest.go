// Package resolvertest provides test helpers for name resolution, in the
// spirit of grpc-go's resolver/manual: a recording Sink that any package's
// tests can hand to a resolver.Builder and then wait on.
package resolvertest

import (
	"errors"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
)

// Sink records every state and error a resolver pushes. Its zero value is
// not usable; call NewSink. It is safe for concurrent use.
type Sink struct {
	mu      sync.Mutex
	states  []resolver.State
	errs    []error
	changed chan struct{} // closed (and replaced) on every event
	reject  error
}

var _ resolver.Sink = (*Sink)(nil)

// NewSink returns an empty recording sink.
func NewSink() *Sink {
	return &Sink{changed: make(chan struct{})}
}

// RejectUpdates makes every following UpdateState return err (nil: accept
// again). Rejected states are not recorded.
func (s *Sink) RejectUpdates(err error) {
	s.mu.Lock()
	s.reject = err
	s.mu.Unlock()
}

// UpdateState records st (a copy of it).
func (s *Sink) UpdateState(st resolver.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reject != nil {
		return s.reject
	}
	s.states = append(s.states, cloneState(st))
	s.signal()
	return nil
}

// ReportError records err.
func (s *Sink) ReportError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
	s.signal()
}

func (s *Sink) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// States returns every accepted state, oldest first.
func (s *Sink) States() []resolver.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]resolver.State, len(s.states))
	for i, st := range s.states {
		out[i] = cloneState(st)
	}
	return out
}

// Errors returns every reported error, oldest first.
func (s *Sink) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// Last returns the latest state, and false when there was none yet.
func (s *Sink) Last() (resolver.State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.states) == 0 {
		return resolver.State{}, false
	}
	return cloneState(s.states[len(s.states)-1]), true
}

// LastError returns the latest reported error, or nil.
func (s *Sink) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) == 0 {
		return nil
	}
	return s.errs[len(s.errs)-1]
}

// errTimeout is what Wait* report when the deadline passes.
var errTimeout = errors.New("resolvertest: timed out")

// wait calls check under the lock after every event until it returns true or
// the timeout passes.
func (s *Sink) wait(timeout time.Duration, check func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ok := check()
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return errTimeout
		}
	}
}

// WaitForState waits until the latest state satisfies pred and returns it.
// It fails the test after timeout, showing the latest state.
func (s *Sink) WaitForState(t testing.TB, timeout time.Duration, pred func(resolver.State) bool) resolver.State {
	t.Helper()
	var got resolver.State
	err := s.wait(timeout, func() bool {
		if len(s.states) == 0 {
			return false
		}
		got = cloneState(s.states[len(s.states)-1])
		return pred(got)
	})
	if err != nil {
		last, _ := s.Last()
		t.Fatalf("resolvertest: no matching state after %v; latest %v (%d states), latest error: %v",
			timeout, Addrs(last), len(s.States()), s.LastError())
	}
	return got
}

// WaitForAddrs waits until the latest state holds exactly the addresses
// want (in any order). With no want it waits for an empty state.
func (s *Sink) WaitForAddrs(t testing.TB, timeout time.Duration, want ...string) resolver.State {
	t.Helper()
	w := slices.Clone(want)
	sort.Strings(w)
	return s.WaitForState(t, timeout, func(st resolver.State) bool {
		return slices.Equal(Addrs(st), w)
	})
}

// WaitForError waits until an error satisfying pred (nil: any) has been
// reported since the call began or before it, and returns it.
func (s *Sink) WaitForError(t testing.TB, timeout time.Duration, pred func(error) bool) error {
	t.Helper()
	var got error
	err := s.wait(timeout, func() bool {
		for _, e := range s.errs {
			if pred == nil || pred(e) {
				got = e
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("resolvertest: no matching error after %v; errors: %v", timeout, s.Errors())
	}
	return got
}

// Addrs returns the Addr of every address of st, sorted.
func Addrs(st resolver.State) []string {
	out := make([]string, 0, len(st.Addresses))
	for _, a := range st.Addresses {
		out = append(out, a.Addr)
	}
	sort.Strings(out)
	return out
}

func cloneState(st resolver.State) resolver.State {
	out := resolver.State{Addresses: make([]resolver.Address, len(st.Addresses))}
	for i, a := range st.Addresses {
		out.Addresses[i] = resolver.Address{Addr: a.Addr}
		if a.Attributes != nil {
			out.Addresses[i].Attributes = make(map[string]string, len(a.Attributes))
			for k, v := range a.Attributes {
				out.Addresses[i].Attributes[k] = v
			}
		}
	}
	return out
}
