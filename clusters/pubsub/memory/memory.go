// Package memory is the in-process pub/sub broker (component type
// pubsub.in-memory), the default "pubsub" component of a sidecar with no
// configuration.
//
// Every subscription group of a topic has a bounded queue. Publish copies
// the message into the queue of every group and returns: it never waits for
// the app, only for queue space (blocking, with its context, when a queue is
// full; an accepted message is never dropped). Each subscription adds
// `concurrency` workers that take from its group's queue, so subscriptions
// of one group share the messages and different groups each get all of
// them. A failed delivery is retried by the same worker with exponential
// backoff, forever unless backOffMaxRetries is set.
package memory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/internal/meta"
)

// Type is the component type this broker registers.
const Type = "pubsub.in-memory"

// Defaults.
const (
	DefaultQueueDepth     = 10000
	DefaultConcurrency    = 10
	DefaultBackOffInitial = 100 * time.Millisecond
	DefaultBackOffMax     = 10 * time.Second
)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("pubsub/in-memory: broker is closed")

func init() { pubsub.Register(Factory{}) }

// Factory builds in-memory brokers.
type Factory struct{}

var (
	_ pubsub.Factory           = Factory{}
	_ pubsub.MetadataValidator = Factory{}
	_ pubsub.Broker            = (*Broker)(nil)
)

// Type returns pubsub.in-memory.
func (Factory) Type() string { return Type }

// ValidateMetadata checks the component metadata without any I/O.
func (Factory) ValidateMetadata(md map[string]string) error {
	_, err := parseConfig(md)
	return err
}

// New builds a broker.
func (Factory) New(_ context.Context, opts pubsub.Options) (pubsub.Broker, error) {
	cfg, err := parseConfig(opts.Metadata)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Broker{
		cfg:    cfg,
		log:    log.With(zap.String("scope", "pubsub.in-memory"), zap.String("component", opts.Name)),
		topics: map[string]*topic{},
	}, nil
}

// Config is the broker's parsed metadata.
type Config struct {
	QueueDepth     int           // queueDepth: per subscription group
	Concurrency    int           // concurrency: workers per subscription
	MaxRetries     int           // backOffMaxRetries (alias maxRetries): -1 retries forever
	BackOffInitial time.Duration // backOffInitialInterval
	BackOffMax     time.Duration // backOffMaxInterval
}

func parseConfig(md map[string]string) (Config, error) {
	r := meta.New("pubsub/in-memory", md)
	cfg := Config{
		QueueDepth:     r.Int("queueDepth", DefaultQueueDepth, 1),
		Concurrency:    r.Int("concurrency", DefaultConcurrency, 1),
		MaxRetries:     -1,
		BackOffInitial: r.Duration("backOffInitialInterval", DefaultBackOffInitial),
		BackOffMax:     r.Duration("backOffMaxInterval", DefaultBackOffMax),
	}
	key := "backOffMaxRetries"
	if _, ok := r.Lookup(key); !ok {
		key = "maxRetries"
	}
	cfg.MaxRetries = r.Int(key, -1, -1)
	if cfg.BackOffInitial == 0 {
		r.Fail("backOffInitialInterval", "must be more than 0")
	}
	if cfg.BackOffMax < cfg.BackOffInitial {
		cfg.BackOffMax = cfg.BackOffInitial
	}
	return cfg, r.Err()
}

// Broker is an in-memory broker.
type Broker struct {
	cfg Config
	log *zap.Logger
	seq atomic.Uint64

	mu     sync.RWMutex
	topics map[string]*topic
	subs   map[*subscription]struct{}
	closed bool
}

type topic struct {
	groups atomic.Pointer[[]*group] // copy on write; read without the lock by Publish
	byName map[string]*group        // under Broker.mu
}

type group struct {
	name    string
	q       chan delivery
	done    chan struct{} // closed when the last member left
	members int           // under Broker.mu
}

// delivery is a queued message and the attempts already made on it.
type delivery struct {
	msg     *pubsub.Message // shared by every group; never modified
	attempt int
}

// Publish hands a copy of msg to every subscription group of the topic. It
// returns once every group's queue took it, or with ctx's error when a full
// queue did not make room in time (groups that took it keep it). With no
// subscriber the message goes nowhere, as with daprd's in-memory broker. On
// success msg.ID is set to the broker's sequence number.
func (b *Broker) Publish(ctx context.Context, topicName string, msg *pubsub.Message) error {
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return ErrClosed
	}
	t := b.topics[topicName]
	b.mu.RUnlock()
	msg.ID = strconv.FormatUint(b.seq.Add(1), 10)
	if t == nil {
		return nil
	}
	groups := t.groups.Load()
	if groups == nil || len(*groups) == 0 {
		return nil
	}
	c := &pubsub.Message{ID: msg.ID, Topic: topicName, ContentType: msg.ContentType, Data: append([]byte(nil), msg.Data...)}
	if len(msg.Metadata) > 0 {
		c.Metadata = make(map[string]string, len(msg.Metadata))
		for k, v := range msg.Metadata {
			c.Metadata[k] = v
		}
	}
	d := delivery{msg: c}
	for _, g := range *groups {
		select {
		case g.q <- d:
			continue
		default:
		}
		select {
		case g.q <- d:
		case <-g.done:
		case <-ctx.Done():
			return fmt.Errorf("pubsub/in-memory: publish to %q: queue of group %q is full: %w", topicName, g.name, ctx.Err())
		}
	}
	return nil
}

type subscription struct {
	b       *Broker
	t       *topic
	topic   string
	g       *group
	deliver pubsub.DeliverFunc
	ctx     context.Context
	quit    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

var anonymous atomic.Uint64

// Subscribe starts `concurrency` workers delivering the messages of
// sub.Topic for sub.Group (an empty group is a group of its own). deliver
// is called with ctx: cancel ctx to abort deliveries in flight. stop (or
// ctx's end) stops the workers and waits for the deliveries in flight; a
// message waiting for its retry goes back to the group's queue. When the
// last subscription of a group stops, the group and the messages still in
// its queue are gone.
func (b *Broker) Subscribe(ctx context.Context, sub pubsub.Subscription, deliver pubsub.DeliverFunc) (func(), error) {
	if sub.Topic == "" {
		return nil, errors.New("pubsub/in-memory: subscribe: empty topic")
	}
	if deliver == nil {
		return nil, errors.New("pubsub/in-memory: subscribe: nil deliver func")
	}
	name := sub.Group
	if name == "" {
		name = "\x00anonymous-" + strconv.FormatUint(anonymous.Add(1), 10)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	t := b.topics[sub.Topic]
	if t == nil {
		t = &topic{byName: map[string]*group{}}
		b.topics[sub.Topic] = t
	}
	g := t.byName[name]
	if g == nil {
		g = &group{name: sub.Group, q: make(chan delivery, b.cfg.QueueDepth), done: make(chan struct{})}
		t.byName[name] = g
		t.store()
	}
	g.members++
	s := &subscription{b: b, t: t, topic: sub.Topic, g: g, deliver: deliver, ctx: ctx, quit: make(chan struct{})}
	if b.subs == nil {
		b.subs = map[*subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()

	s.wg.Add(b.cfg.Concurrency)
	for range b.cfg.Concurrency {
		go s.work()
	}
	unhook := context.AfterFunc(ctx, s.stop)
	return func() { unhook(); s.stop() }, nil
}

func (t *topic) store() {
	gs := make([]*group, 0, len(t.byName))
	for _, g := range t.byName {
		gs = append(gs, g)
	}
	t.groups.Store(&gs)
}

func (s *subscription) stop() {
	s.once.Do(func() {
		close(s.quit)
		b := s.b
		b.mu.Lock()
		delete(b.subs, s)
		s.g.members--
		if s.g.members == 0 {
			for name, g := range s.t.byName {
				if g == s.g {
					delete(s.t.byName, name)
				}
			}
			s.t.store()
			if len(s.t.byName) == 0 && b.topics[s.topic] == s.t {
				delete(b.topics, s.topic)
			}
			close(s.g.done)
		}
		b.mu.Unlock()
	})
	s.wg.Wait()
}

func (s *subscription) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.quit:
			return
		case <-s.ctx.Done():
			return
		case d := <-s.g.q:
			if !s.handle(d) {
				return
			}
		}
	}
}

// handle delivers d until it is acknowledged, dropped or the subscription
// stops; it reports whether the worker should go on.
func (s *subscription) handle(d delivery) bool {
	cfg := &s.b.cfg
	backoff := cfg.BackOffInitial
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		d.attempt++
		m := *d.msg
		m.Attempt = d.attempt
		err := s.deliver(s.ctx, &m)
		if err == nil || errors.Is(err, pubsub.ErrDrop) {
			return true
		}
		if cfg.MaxRetries >= 0 && d.attempt > cfg.MaxRetries {
			s.b.log.Warn("giving up on a message after its last retry",
				zap.String("topic", s.topic), zap.String("group", s.g.name), zap.String("id", d.msg.ID),
				zap.Int("attempts", d.attempt), zap.Error(err))
			return true
		}
		if timer == nil {
			timer = time.NewTimer(backoff)
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-timer.C:
		case <-s.quit:
			s.requeue(d)
			return false
		case <-s.ctx.Done():
			s.requeue(d)
			return false
		}
		backoff = min(2*backoff, cfg.BackOffMax)
	}
}

// requeue gives a message whose retry was interrupted back to its group,
// unless the group is gone.
func (s *subscription) requeue(d delivery) {
	select {
	case s.g.q <- d:
	case <-s.g.done:
	}
}

// Close stops every subscription (waiting for deliveries in flight) and
// makes Publish and Subscribe fail with ErrClosed.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.stop()
	}
	return nil
}
