// Package subscription is the listener whose source is the brokers: once
// the app is ready it collects the app's subscriptions (declarative ones from
// the configuration, programmatic ones from GET /dapr/subscribe), subscribes
// to each component's broker, and runs every message through the listener's
// filter chain to the app route (router -> local app cluster), mapping the
// app's answer to ack / redeliver / drop as daprd does.
package subscription

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// Kind is the listener kind.
const Kind = config.ListenerSubscription

func init() { listeners.Register(factory{}) }

type factory struct{}

var _ listeners.Factory = factory{}

func (factory) Kind() string { return Kind }

func (factory) Start(spec config.Listener, chain *listeners.ChainRef, rt *listeners.Runtime) (listeners.Listener, error) {
	return Start(spec, chain, rt, Options{})
}

// BrokerProvider is implemented by pub/sub component clusters
// (clusters/pubsubcluster): the subscription side of the component.
type BrokerProvider interface {
	Broker() pubsub.Broker
}

// SubscribeScoper is implemented by component clusters that scope topics
// (subscriptionScopes, allowedTopics).
type SubscribeScoper interface {
	SubscribeAllowed(topic string) bool
}

// Publisher is implemented by component clusters that publish with their
// metrics; used for dead-letter topics (else the broker is used directly).
type Publisher interface {
	Publish(ctx context.Context, topic string, msg *pubsub.Message) error
}

// Options tune a listener (zero values: the defaults).
type Options struct {
	// Resync is how often the listener looks for a new cluster set (a
	// component rebuilt by a new snapshot) to move its subscriptions to.
	// Default 1s.
	Resync time.Duration
	// DeliveryTimeout bounds one delivery to the app when the broker gives
	// no deadline. Default 60s.
	DeliveryTimeout time.Duration
	// RetryBackoff is the first delay between in-listener retries (doubling,
	// capped at 5s). Default 100ms.
	RetryBackoff time.Duration
}

// Listener delivers the subscriptions of one app.
type Listener struct {
	name  string
	chain *listeners.ChainRef
	rt    *listeners.Runtime
	log   *zap.Logger
	opts  Options

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	subs    []*sub
	set     *clusters.Set
	ready   chan struct{} // closed once subscriptions were collected
	closing bool

	ingress  stats.CounterVec
	ingressL stats.HistogramVec
	hasStats bool
}

var _ listeners.Listener = (*Listener)(nil)

// Start starts the listener: it waits for the app in the background.
func Start(spec config.Listener, chain *listeners.ChainRef, rt *listeners.Runtime, opts Options) (*Listener, error) {
	if opts.Resync <= 0 {
		opts.Resync = time.Second
	}
	if opts.DeliveryTimeout <= 0 {
		opts.DeliveryTimeout = 60 * time.Second
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 100 * time.Millisecond
	}
	log := rt.Logger
	if log == nil {
		log = zap.NewNop()
	}
	l := &Listener{name: spec.Name, chain: chain, rt: rt, opts: opts, done: make(chan struct{}), ready: make(chan struct{}),
		log: log.With(zap.String("scope", "switchyard.runtime.pubsub"), zap.String("listener", spec.Name))}
	if rt.Stats != nil {
		l.hasStats = true
		l.ingress = rt.Stats.Counter("component_pubsub_ingress_count", "The number of incoming messages arriving from the pub/sub component.",
			"app_id", "component", "namespace", "process_status", "topic")
		l.ingressL = rt.Stats.Histogram("component_pubsub_ingress_latencies", "The consuming app event processing latency.",
			stats.LatencyBucketsMS, "app_id", "component", "namespace", "process_status", "topic")
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	rt.SetSubscriptionLister(l.List)
	go l.run()
	return l, nil
}

// Addrs is empty: the listener has no socket.
func (l *Listener) Addrs() []net.Addr { return nil }

// Ready is closed once the subscriptions were collected and subscribed.
func (l *Listener) Ready() <-chan struct{} { return l.ready }

func (l *Listener) run() {
	defer close(l.done)
	select {
	case <-l.rt.Health.AppReady():
	case <-l.ctx.Done():
		return
	}
	cfgs := l.collect()
	l.mu.Lock()
	for _, c := range cfgs {
		s, err := l.newSub(c)
		if err != nil {
			l.log.Error("subscription not started", zap.String("pubsub", c.cfg.PubSub), zap.String("topic", c.cfg.Topic), zap.Error(err))
			continue
		}
		l.subs = append(l.subs, s)
	}
	l.mu.Unlock()
	l.resync()
	close(l.ready)
	t := time.NewTicker(l.opts.Resync)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			l.resync()
		}
	}
}

type collected struct {
	cfg  config.Subscription
	kind string
}

// collect gathers the declarative subscriptions of this app and the app's
// programmatic ones.
func (l *Listener) collect() []collected {
	var out []collected
	snap := l.rt.Snapshot()
	if snap == nil || snap.Config == nil {
		return nil
	}
	cfg := snap.Config
	for _, s := range cfg.Subscriptions {
		if len(s.Scopes) > 0 && !slices.Contains(s.Scopes, cfg.AppID) {
			continue
		}
		out = append(out, collected{cfg: s, kind: "DECLARATIVE"})
	}
	if cfg.AppPort == 0 {
		return out
	}
	var prog []config.Subscription
	var err error
	if cfg.AppProtocol == "grpc" {
		var tl TopicLister
		if set := l.rt.Clusters(); set != nil {
			tl, _ = set.Cluster(config.LocalAppCluster).(TopicLister)
		}
		if tl != nil {
			ctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
			prog, err = tl.ListTopicSubscriptions(ctx)
			cancel()
		} else {
			prog, err = fetchGRPC(l.ctx, cfg)
		}
	} else {
		prog, err = fetchHTTP(l.ctx, cfg)
	}
	if err != nil {
		l.log.Error("could not read the app's subscriptions", zap.Error(err))
	}
	for _, s := range prog {
		out = append(out, collected{cfg: s, kind: "PROGRAMMATIC"})
	}
	return out
}

// resync subscribes every subscription to the broker of the current
// cluster set, moving those whose component was rebuilt, and retries those
// whose subscribe failed (broker down, component missing).
func (l *Listener) resync() {
	// Only run's goroutine calls resync; l.mu guards what List and Close
	// read (subs, stop), and is not held while a broker is being dialed.
	set := l.rt.Clusters()
	l.mu.Lock()
	if l.closing || set == nil {
		l.mu.Unlock()
		return
	}
	changed := set != l.set
	l.set = set
	subs := l.subs
	l.mu.Unlock()
	for _, s := range subs {
		h := set.PubSub(s.pubsub)
		if s.stop != nil && (!changed || h == s.handler) {
			continue
		}
		if s.stop != nil {
			s.stop()
			l.mu.Lock()
			s.stop = nil
			l.mu.Unlock()
		}
		s.handler = h
		stop, err := s.subscribe(h)
		if err != nil {
			if !s.failing {
				l.log.Error("subscribing (retried every resync period)", zap.String("pubsub", s.cfg.PubSub), zap.String("topic", s.cfg.Topic), zap.Error(err))
			}
			s.failing = true
			continue
		}
		l.mu.Lock()
		s.stop = stop
		l.mu.Unlock()
		s.failing = false
		l.log.Info("subscribed", zap.String("pubsub", s.cfg.PubSub), zap.String("topic", s.cfg.Topic), zap.String("type", s.kind))
	}
}

// List describes the active subscriptions (GET /v1.0/metadata).
func (l *Listener) List() []listeners.MetadataSubscription {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]listeners.MetadataSubscription, 0, len(l.subs))
	for _, s := range l.subs {
		if s.stop == nil {
			continue
		}
		ms := listeners.MetadataSubscription{PubSubName: s.cfg.PubSub, Topic: s.cfg.Topic, Metadata: s.cfg.Metadata,
			DeadLetterTopic: s.cfg.DeadLetterTopic, Type: s.kind}
		for _, r := range s.cfg.Rules {
			ms.Rules = append(ms.Rules, listeners.MetadataRule{Match: r.Match, Path: r.Path})
		}
		if s.cfg.Route != "" {
			ms.Rules = append(ms.Rules, listeners.MetadataRule{Path: s.cfg.Route})
		}
		out = append(out, ms)
	}
	return out
}

// Close stops every subscription and waits for the deliveries in flight
// (until ctx ends).
func (l *Listener) Close(ctx context.Context) error {
	l.cancel()
	done := make(chan struct{})
	go func() {
		<-l.done
		l.mu.Lock()
		l.closing = true
		subs := l.subs
		l.mu.Unlock()
		var wg sync.WaitGroup
		for _, s := range subs {
			if s.stop != nil {
				wg.Add(1)
				go func(stop func()) { defer wg.Done(); stop() }(s.stop)
			}
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("subscription: %s: close: %w", l.name, ctx.Err())
	}
}

var errNoBroker = errors.New("subscription: the component is not a pub/sub broker")
