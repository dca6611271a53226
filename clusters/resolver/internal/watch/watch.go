// Package watch is the refresh loop the polling resolver schemes share: look
// up once at start, again every interval and on ResolveNow (rate-limited),
// push a state into the sink only when the addresses changed, report errors
// and keep the last good addresses when a lookup fails.
package watch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
)

// DefaultMinInterval is the shortest time between two lookups caused by
// ResolveNow.
const DefaultMinInterval = time.Second

// Lookup returns the current addresses of the watched target. An error means
// the answer is unknown (the last good addresses stay); an empty slice with
// no error is an authoritative "nothing there".
type Lookup func(ctx context.Context) ([]resolver.Address, error)

// Config says what to watch and how often.
type Config struct {
	Sink   resolver.Sink
	Lookup Lookup
	// Interval between periodic lookups; <= 0: only at start and on ResolveNow.
	Interval time.Duration
	// MinInterval rate-limits ResolveNow; 0: DefaultMinInterval.
	MinInterval time.Duration
	// Timeout bounds one lookup; 0: no bound beyond Close.
	Timeout time.Duration
	// EmptyError is reported when a lookup succeeds with no addresses
	// (typically TargetError(..., resolver.ErrNoAddresses)); nil: none.
	EmptyError error
	Logger     *zap.Logger
}

// Watcher runs a Config's loop until Close.
type Watcher struct {
	cfg    Config
	now    chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs the first lookup in the background and returns at once.
func Start(cfg Config) *Watcher {
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{cfg: cfg, now: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	return w
}

// ResolveNow asks for a lookup soon; it never blocks, and calls that arrive
// while one is pending are merged into it.
func (w *Watcher) ResolveNow() {
	select {
	case w.now <- struct{}{}:
	default:
	}
}

// Close stops the loop and waits for it; a lookup in flight is cancelled.
func (w *Watcher) Close() {
	w.cancel()
	<-w.done
}

type loopState struct {
	pushed  bool
	last    []resolver.Address
	lastErr string
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	var st loopState
	forced := true
	for {
		w.once(ctx, &st, forced)
		lastAt := time.Now()

		var tick <-chan time.Time
		var timer *time.Timer
		if w.cfg.Interval > 0 {
			timer = time.NewTimer(w.cfg.Interval)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			stopTimer(timer)
			return
		case <-tick:
			forced = false
		case <-w.now:
			stopTimer(timer)
			if wait := w.cfg.MinInterval - time.Since(lastAt); wait > 0 {
				rl := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					rl.Stop()
					return
				case <-rl.C:
				}
			}
			// Merge requests that arrived while rate-limited.
			select {
			case <-w.now:
			default:
			}
			forced = true
		}
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// once does one lookup. forced lookups (the first, and ResolveNow) report
// their error even when it repeats the previous one.
func (w *Watcher) once(ctx context.Context, st *loopState, forced bool) {
	lctx := ctx
	if w.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, w.cfg.Timeout)
		defer cancel()
	}
	addrs, err := w.cfg.Lookup(lctx)
	if ctx.Err() != nil {
		return // closing
	}
	if err != nil {
		w.report(st, err, forced)
		return
	}
	addrs = normalize(addrs)
	if !st.pushed || !equal(addrs, st.last) {
		if uerr := w.cfg.Sink.UpdateState(resolver.State{Addresses: clone(addrs)}); uerr != nil {
			w.cfg.Logger.Debug("state update rejected", zap.Error(uerr))
		} else {
			st.pushed, st.last = true, addrs
			if len(addrs) > 0 {
				st.lastErr = ""
			}
		}
	}
	if len(addrs) == 0 && w.cfg.EmptyError != nil {
		w.report(st, w.cfg.EmptyError, forced)
	}
}

func (w *Watcher) report(st *loopState, err error, forced bool) {
	msg := err.Error()
	if forced || msg != st.lastErr {
		w.cfg.Sink.ReportError(err)
	}
	st.lastErr = msg
}

// normalize sorts by address and drops duplicates (the first one wins).
func normalize(in []resolver.Address) []resolver.Address {
	out := slices.Clone(in)
	slices.SortStableFunc(out, func(a, b resolver.Address) int { return strings.Compare(a.Addr, b.Addr) })
	return slices.CompactFunc(out, func(a, b resolver.Address) bool { return a.Addr == b.Addr })
}

func equal(a, b []resolver.Address) bool {
	return slices.EqualFunc(a, b, func(x, y resolver.Address) bool {
		return x.Addr == y.Addr && maps.Equal(x.Attributes, y.Attributes)
	})
}

func clone(in []resolver.Address) []resolver.Address {
	out := make([]resolver.Address, len(in))
	for i, a := range in {
		out[i] = resolver.Address{Addr: a.Addr, Attributes: maps.Clone(a.Attributes)}
	}
	return out
}

// TargetError names the component, app id and namespace in err, so that it
// reads well at the end of an ERR_DIRECT_INVOKE message, e.g.
// `resolver/dns: app id "orders" in namespace "default": lookup ...`.
func TargetError(component string, t resolver.Target, err error) error {
	if t.Namespace == "" {
		return fmt.Errorf("%s: app id %q: %w", component, t.AppID, err)
	}
	return fmt.Errorf("%s: app id %q in namespace %q: %w", component, t.AppID, t.Namespace, err)
}
