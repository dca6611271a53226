package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
)

type subscription struct {
	b        *Broker
	stream   string
	group    string
	consumer string
	deliver  pubsub.DeliverFunc
	ctx      context.Context // the subscriber's: deliveries run under it

	loopCtx context.Context // ends on stop or when ctx ends
	cancel  context.CancelFunc
	queue   chan entry
	wg      sync.WaitGroup
	once    sync.Once

	mu    sync.Mutex
	local map[string]struct{} // entry ids queued or in flight here
}

type entry struct {
	msg     goredis.XMessage
	attempt int
}

// Subscribe reads sub.Topic's stream as a member of a consumer group: the
// consumerID metadata when set, else sub.Group, else the app id. The group
// is created at the start of the stream (id 0) when missing, as daprd does.
// Each subscription is its own consumer (group-<broker id>-<n>), so that
// its pending entries can be reclaimed by the others if it dies.
//
// Entries are read with XREADGROUP (queueDepth at a time) and delivered by
// `concurrency` workers; an entry is acknowledged (XACK) only when deliver
// returned nil or ErrDrop. Entries that failed, and those of dead
// consumers, stay pending; every redeliverInterval the entries pending
// longer than processingTimeout are claimed (XPENDING + XCLAIM) and
// delivered again. A delivery runs under ctx with a processingTimeout
// deadline, so that it ends before another consumer may claim its entry.
//
// stop (or the end of ctx) ends the loops and waits for deliveries in
// flight; entries read but not delivered stay pending for the others.
func (b *Broker) Subscribe(ctx context.Context, sub pubsub.Subscription, deliver pubsub.DeliverFunc) (func(), error) {
	if sub.Topic == "" {
		return nil, errors.New("pubsub/redis: subscribe: empty topic")
	}
	if deliver == nil {
		return nil, errors.New("pubsub/redis: subscribe: nil deliver func")
	}
	group := b.cfg.ConsumerID
	if group == "" {
		group = sub.Group
	}
	if group == "" {
		group = b.appID
	}
	if group == "" {
		return nil, fmt.Errorf("pubsub/redis: subscribe to %q: no consumer group (set consumerID or the app id)", sub.Topic)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.seq++
	consumer := group + "-" + b.id + "-" + strconv.Itoa(b.seq)
	b.mu.Unlock()

	s := &subscription{
		b: b, stream: sub.Topic, group: group, consumer: consumer, deliver: deliver, ctx: ctx,
		queue: make(chan entry, b.cfg.QueueDepth),
		local: map[string]struct{}{},
	}
	if err := s.ensureGroup(ctx); err != nil {
		return nil, err
	}
	s.loopCtx, s.cancel = context.WithCancel(ctx)

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.cancel()
		return nil, ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()

	s.wg.Add(1 + b.cfg.Concurrency)
	go s.poll()
	for range b.cfg.Concurrency {
		go s.work()
	}
	if b.cfg.ProcessingTimeout > 0 && b.cfg.RedeliverInterval > 0 {
		s.wg.Add(1)
		go s.reclaimLoop()
	}
	unhook := context.AfterFunc(ctx, s.stop)
	return func() { unhook(); s.stop() }, nil
}

func (s *subscription) ensureGroup(ctx context.Context) error {
	err := s.b.client.XGroupCreateMkStream(ctx, s.stream, s.group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("pubsub/redis: create group %q on stream %q: %w", s.group, s.stream, err)
	}
	return nil
}

func (s *subscription) stop() {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
		b := s.b
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
		// Forget this consumer if it owns nothing (deleting a consumer
		// drops its pending entries, so never one that has some).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p, err := b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: s.stream, Group: s.group, Start: "-", End: "+", Count: 1, Consumer: s.consumer,
		}).Result()
		if err == nil && len(p) == 0 {
			_ = b.client.XGroupDelConsumer(ctx, s.stream, s.group, s.consumer).Err()
		}
	})
	s.wg.Wait()
}

// pause waits d or until the loops end; it reports whether to go on.
func (s *subscription) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.loopCtx.Done():
		return false
	}
}

func (s *subscription) poll() {
	defer s.wg.Done()
	backoff := 50 * time.Millisecond
	for s.loopCtx.Err() == nil {
		res, err := s.b.client.XReadGroup(s.loopCtx, &goredis.XReadGroupArgs{
			Group: s.group, Consumer: s.consumer, Streams: []string{s.stream, ">"},
			Count: int64(s.b.cfg.QueueDepth), Block: s.b.cfg.ReadTimeout,
		}).Result()
		if err != nil {
			if errors.Is(err, goredis.Nil) || s.loopCtx.Err() != nil {
				continue
			}
			if strings.Contains(err.Error(), "NOGROUP") {
				// The stream or the group is gone (deleted, or Redis lost
				// its data): create them again.
				s.b.log.Warn("consumer group missing, creating it again", zap.String("stream", s.stream), zap.String("group", s.group))
				_ = s.ensureGroup(s.loopCtx)
			} else {
				s.b.log.Warn("reading stream failed", zap.String("stream", s.stream), zap.Error(err))
			}
			if !s.pause(backoff) {
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		for _, st := range res {
			for _, m := range st.Messages {
				if !s.enqueue(entry{msg: m, attempt: 1}) {
					return
				}
			}
		}
	}
}

func (s *subscription) enqueue(e entry) bool {
	s.mu.Lock()
	s.local[e.msg.ID] = struct{}{}
	s.mu.Unlock()
	select {
	case s.queue <- e:
		return true
	case <-s.loopCtx.Done():
		s.forget(e.msg.ID)
		return false
	}
}

func (s *subscription) forget(id string) {
	s.mu.Lock()
	delete(s.local, id)
	s.mu.Unlock()
}

func (s *subscription) isLocal(id string) bool {
	s.mu.Lock()
	_, ok := s.local[id]
	s.mu.Unlock()
	return ok
}

func (s *subscription) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.loopCtx.Done():
			return
		case e := <-s.queue:
			s.process(e)
			s.forget(e.msg.ID)
		}
	}
}

func (s *subscription) process(e entry) {
	cfg := &s.b.cfg
	if len(e.msg.Values) == 0 {
		// The entry was trimmed or deleted while pending: nothing to deliver.
		s.ack(e.msg.ID)
		return
	}
	m := &pubsub.Message{ID: e.msg.ID, Topic: s.stream, Attempt: e.attempt}
	switch v := e.msg.Values["data"].(type) {
	case string:
		m.Data = []byte(v)
	case []byte:
		m.Data = v
	}
	if v, ok := e.msg.Values["metadata"].(string); ok && v != "" {
		if err := json.Unmarshal([]byte(v), &m.Metadata); err != nil {
			s.b.log.Warn("entry has unreadable metadata", zap.String("stream", s.stream), zap.String("id", e.msg.ID), zap.Error(err))
		}
	}
	ctx := s.ctx
	if cfg.ProcessingTimeout > 0 && cfg.RedeliverInterval > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ProcessingTimeout)
		defer cancel()
	}
	err := s.deliver(ctx, m)
	if err != nil && !errors.Is(err, pubsub.ErrDrop) {
		s.b.log.Debug("delivery failed; the entry stays pending", zap.String("stream", s.stream), zap.String("id", e.msg.ID), zap.Error(err))
		return
	}
	s.ack(e.msg.ID)
}

func (s *subscription) ack(id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 5*time.Second)
	defer cancel()
	if err := s.b.client.XAck(ctx, s.stream, s.group, id).Err(); err != nil {
		s.b.log.Warn("acknowledging an entry failed; it will be delivered again", zap.String("stream", s.stream), zap.String("id", id), zap.Error(err))
	}
}

func (s *subscription) reclaimLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.b.cfg.RedeliverInterval)
	defer t.Stop()
	for {
		s.reclaim()
		select {
		case <-s.loopCtx.Done():
			return
		case <-t.C:
		}
	}
}

// reclaim claims the group's entries pending longer than processingTimeout
// (failed here, or owned by consumers that died or hang), except those
// queued or in flight here, and queues them for delivery.
func (s *subscription) reclaim() {
	cfg := &s.b.cfg
	start := "-"
	for s.loopCtx.Err() == nil {
		pend, err := s.b.client.XPendingExt(s.loopCtx, &goredis.XPendingExtArgs{
			Stream: s.stream, Group: s.group, Idle: cfg.ProcessingTimeout,
			Start: start, End: "+", Count: int64(cfg.QueueDepth),
		}).Result()
		if err != nil {
			if s.loopCtx.Err() == nil && !errors.Is(err, goredis.Nil) {
				s.b.log.Warn("listing pending entries failed", zap.String("stream", s.stream), zap.Error(err))
			}
			return
		}
		if len(pend) == 0 {
			return
		}
		ids := make([]string, 0, len(pend))
		attempts := make(map[string]int, len(pend))
		for _, p := range pend {
			if !s.isLocal(p.ID) {
				ids = append(ids, p.ID)
				attempts[p.ID] = int(p.RetryCount) + 1
			}
		}
		if len(ids) > 0 {
			msgs, err := s.b.client.XClaim(s.loopCtx, &goredis.XClaimArgs{
				Stream: s.stream, Group: s.group, Consumer: s.consumer,
				MinIdle: cfg.ProcessingTimeout, Messages: ids,
			}).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				if s.loopCtx.Err() == nil {
					s.b.log.Warn("claiming pending entries failed", zap.String("stream", s.stream), zap.Error(err))
				}
				return
			}
			for _, m := range msgs {
				if !s.enqueue(entry{msg: m, attempt: attempts[m.ID]}) {
					return
				}
			}
		}
		if len(pend) < cfg.QueueDepth {
			return
		}
		start = "(" + pend[len(pend)-1].ID
	}
}
