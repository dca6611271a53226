package watch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/resolvertest"
)

// fakeLookup answers with whatever the test set last.
type fakeLookup struct {
	mu    sync.Mutex
	addrs []string
	err   error
	calls atomic.Int32
}

func (f *fakeLookup) set(err error, addrs ...string) {
	f.mu.Lock()
	f.addrs, f.err = addrs, err
	f.mu.Unlock()
}

func (f *fakeLookup) lookup(context.Context) ([]resolver.Address, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	out := make([]resolver.Address, 0, len(f.addrs))
	for _, a := range f.addrs {
		out = append(out, resolver.Address{Addr: a})
	}
	return out, nil
}

func TestWatcher(t *testing.T) {
	errDown := errors.New("down")
	errEmpty := TargetError("resolver/test", resolver.Target{AppID: "orders", Namespace: "default"}, resolver.ErrNoAddresses)
	tests := []struct {
		name string
		run  func(t *testing.T, f *fakeLookup, s *resolvertest.Sink, w *Watcher)
	}{
		{
			name: "pushes only when addresses change",
			run: func(t *testing.T, f *fakeLookup, s *resolvertest.Sink, w *Watcher) {
				s.WaitForAddrs(t, 2*time.Second, "a:1", "b:1")
				// Same set in another order: several refreshes, no new state.
				f.set(nil, "b:1", "a:1", "a:1")
				start := f.calls.Load()
				waitCalls(t, f, start+3)
				if n := len(s.States()); n != 1 {
					t.Fatalf("got %d states for an unchanged answer, want 1", n)
				}
				f.set(nil, "c:1")
				s.WaitForAddrs(t, 2*time.Second, "c:1")
			},
		},
		{
			name: "failure keeps last good and reports once per distinct error",
			run: func(t *testing.T, f *fakeLookup, s *resolvertest.Sink, w *Watcher) {
				s.WaitForAddrs(t, 2*time.Second, "a:1", "b:1")
				f.set(errDown)
				s.WaitForError(t, 2*time.Second, func(err error) bool { return errors.Is(err, errDown) })
				start := f.calls.Load()
				waitCalls(t, f, start+3)
				if n := len(s.Errors()); n != 1 {
					t.Fatalf("got %d errors for a repeated failure, want 1", n)
				}
				if n := len(s.States()); n != 1 {
					t.Fatalf("a failure pushed a state (%d states)", n)
				}
			},
		},
		{
			name: "authoritative empty answer pushes empty state and reports",
			run: func(t *testing.T, f *fakeLookup, s *resolvertest.Sink, w *Watcher) {
				s.WaitForAddrs(t, 2*time.Second, "a:1", "b:1")
				f.set(nil)
				s.WaitForAddrs(t, 2*time.Second)
				err := s.WaitForError(t, 2*time.Second, nil)
				if !errors.Is(err, resolver.ErrNoAddresses) {
					t.Fatalf("error %v is not ErrNoAddresses", err)
				}
				if want := `resolver/test: app id "orders" in namespace "default": resolver: no addresses`; err.Error() != want {
					t.Fatalf("error %q, want %q", err, want)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeLookup{}
			f.set(nil, "b:1", "a:1")
			s := resolvertest.NewSink()
			w := Start(Config{Sink: s, Lookup: f.lookup, Interval: 5 * time.Millisecond, EmptyError: errEmpty})
			t.Cleanup(w.Close)
			tc.run(t, f, s, w)
		})
	}
}

func waitCalls(t *testing.T, f *fakeLookup, n int32) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for f.calls.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("lookup called %d times, want %d", f.calls.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestResolveNowRateLimited(t *testing.T) {
	f := &fakeLookup{}
	f.set(nil, "a:1")
	s := resolvertest.NewSink()
	const minInterval = 200 * time.Millisecond
	w := Start(Config{Sink: s, Lookup: f.lookup, MinInterval: minInterval})
	t.Cleanup(w.Close)
	s.WaitForAddrs(t, 2*time.Second, "a:1")

	start := time.Now()
	f.set(nil, "b:1")
	for range 50 {
		w.ResolveNow() // must not block
	}
	s.WaitForAddrs(t, 2*time.Second, "b:1")
	if el := time.Since(start); el < minInterval/2 {
		t.Fatalf("ResolveNow looked up after %v, want rate limit near %v", el, minInterval)
	}
	// 50 calls merged into at most two lookups after the first.
	time.Sleep(2 * minInterval) // nothing to wait on: checking that nothing happens
	if n := f.calls.Load(); n > 3 {
		t.Fatalf("lookup called %d times for 50 merged ResolveNow calls", n)
	}
}

func TestCloseCancelsLookup(t *testing.T) {
	started := make(chan struct{})
	s := resolvertest.NewSink()
	w := Start(Config{Sink: s, Lookup: func(ctx context.Context) ([]resolver.Address, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	<-started
	done := make(chan struct{})
	go func() { w.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not cancel the lookup in flight")
	}
	if len(s.Errors()) != 0 {
		t.Fatalf("closing reported %v", s.Errors())
	}
}
