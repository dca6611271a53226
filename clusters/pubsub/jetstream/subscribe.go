package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
)

type subscription struct {
	b       *Broker
	topic   string
	deliver pubsub.DeliverFunc
	ctx     context.Context
	cc      jetstream.ConsumeContext
	work    chan jetstream.Msg
	quit    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// ConsumerName returns the durable consumer a subscription of topic uses:
// durable when each topic has its own stream, durable-<topic> when the
// streamName metadata puts every topic in one stream.
func (b *Broker) ConsumerName(durable, topic string) string {
	if b.cfg.StreamName == "" {
		return durable
	}
	return durable + "-" + streamNameFor(topic)
}

// Subscribe creates (or reuses) a durable pull consumer on the topic's
// stream, named after durableName, else sub.Group, else the app id, with
// explicit acks; instances of one group share it. Messages are delivered
// by `concurrency` workers under ctx with an ackWait deadline; nil acks,
// ErrDrop terminates (no redelivery), any other error naks with nakDelay
// (redelivered up to maxDeliver times). stop (or the end of ctx) waits for
// the deliveries in flight and naks what was fetched but not delivered.
func (b *Broker) Subscribe(ctx context.Context, sub pubsub.Subscription, deliver pubsub.DeliverFunc) (func(), error) {
	if sub.Topic == "" {
		return nil, errors.New("pubsub/jetstream: subscribe: empty topic")
	}
	if deliver == nil {
		return nil, errors.New("pubsub/jetstream: subscribe: nil deliver func")
	}
	durable := b.cfg.DurableName
	if durable == "" {
		durable = sub.Group
	}
	if durable == "" {
		durable = b.appID
	}
	if durable == "" || !validName(durable) {
		return nil, fmt.Errorf("pubsub/jetstream: subscribe to %q: invalid durable name %q (set durableName or a group)", sub.Topic, durable)
	}
	stream, err := b.stream(ctx, sub.Topic)
	if err != nil {
		return nil, err
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:       b.ConsumerName(durable, sub.Topic),
		FilterSubject: sub.Topic,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		MaxDeliver:    b.cfg.MaxDeliver,
		DeliverPolicy: b.cfg.DeliverPolicy,
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, stream, ccfg)
	if err != nil {
		return nil, fmt.Errorf("pubsub/jetstream: consumer %s on stream %s: %w", ccfg.Durable, stream, err)
	}
	s := &subscription{
		b: b, topic: sub.Topic, deliver: deliver, ctx: ctx,
		work: make(chan jetstream.Msg),
		quit: make(chan struct{}),
	}
	s.cc, err = cons.Consume(s.handle,
		jetstream.PullMaxMessages(2*b.cfg.Concurrency),
		// Pull requests live 5 s instead of nats.go's 30 s (heartbeats every
		// 2.5 s): should a pull be lost, deliveries resume within seconds.
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			b.log.Debug("consume", zap.String("topic", sub.Topic), zap.Error(err))
		}))
	if err != nil {
		return nil, fmt.Errorf("pubsub/jetstream: consume %s: %w", ccfg.Durable, err)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.cc.Stop()
		return nil, ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	s.wg.Add(b.cfg.Concurrency)
	for range b.cfg.Concurrency {
		go s.worker()
	}
	unhook := context.AfterFunc(ctx, s.stop)
	return func() { unhook(); s.stop() }, nil
}

// pullExpiry is how long one pull request of a subscription lives.
const pullExpiry = 5 * time.Second

// handle runs on the consumer's goroutine: it hands the message to a worker
// (waiting for one, which bounds what is fetched) or naks it after stop.
func (s *subscription) handle(m jetstream.Msg) {
	select {
	case s.work <- m:
	case <-s.quit:
		_ = m.Nak()
	}
}

func (s *subscription) worker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.quit:
			return
		default:
		}
		select {
		case <-s.quit:
			return
		case m := <-s.work:
			s.process(m)
		}
	}
}

func (s *subscription) process(m jetstream.Msg) {
	cfg := &s.b.cfg
	msg := &pubsub.Message{Topic: s.topic, Data: m.Data()}
	if md, err := m.Metadata(); err == nil {
		msg.ID = strconv.FormatUint(md.Sequence.Stream, 10)
		msg.Attempt = int(md.NumDelivered)
	}
	if h := m.Headers(); len(h) > 0 {
		for k, v := range h {
			if len(v) == 0 || strings.HasPrefix(k, "Nats-") {
				continue
			}
			if k == "Content-Type" {
				msg.ContentType = v[0]
				continue
			}
			if msg.Metadata == nil {
				msg.Metadata = make(map[string]string, len(h))
			}
			msg.Metadata[k] = v[0]
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, cfg.AckWait)
	err := s.deliver(ctx, msg)
	cancel()
	var aerr error
	switch {
	case err == nil:
		aerr = m.Ack()
	case errors.Is(err, pubsub.ErrDrop):
		aerr = m.Term()
	default:
		s.b.log.Debug("delivery failed; nak", zap.String("topic", s.topic), zap.String("seq", msg.ID), zap.Error(err))
		aerr = m.NakWithDelay(cfg.NakDelay)
	}
	if aerr != nil {
		s.b.log.Warn("acknowledging a message failed; it will be redelivered after ackWait", zap.String("topic", s.topic), zap.String("seq", msg.ID), zap.Error(aerr))
	}
}

func (s *subscription) stop() {
	s.once.Do(func() {
		close(s.quit)
		s.cc.Stop()
		s.wg.Wait()
		select {
		case <-s.cc.Closed():
		case <-time.After(5 * time.Second):
		}
		// Nothing is left in s.work: the handler naks once quit is closed.
		b := s.b
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	})
	s.wg.Wait()
}
