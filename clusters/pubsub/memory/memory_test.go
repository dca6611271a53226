package memory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/pubsubtest"
)

func newBroker(t testing.TB, md map[string]string) *Broker {
	t.Helper()
	f, ok := pubsub.Get(Type)
	if !ok {
		t.Fatalf("%s not registered", Type)
	}
	b, err := f.New(context.Background(), pubsub.Options{Name: "pubsub", Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.(*Broker)
}

func publish(t testing.TB, b pubsub.Broker, topic string, n int) {
	t.Helper()
	for i := range n {
		if err := b.Publish(context.Background(), topic, &pubsub.Message{Data: []byte(fmt.Sprint(i)), ContentType: "text/plain"}); err != nil {
			t.Fatal(err)
		}
	}
}

// collector records deliveries.
type collector struct {
	mu   sync.Mutex
	seen map[string]int
	n    atomic.Int64
}

func (c *collector) deliver(_ context.Context, m *pubsub.Message) error {
	c.mu.Lock()
	if c.seen == nil {
		c.seen = map[string]int{}
	}
	c.seen[string(m.Data)]++
	c.mu.Unlock()
	c.n.Add(1)
	return nil
}

func TestValidateMetadata(t *testing.T) {
	tests := []struct {
		name    string
		md      map[string]string
		wantErr string
	}{
		{"empty", nil, ""},
		{"all keys", map[string]string{"queueDepth": "5", "concurrency": "2", "backOffMaxRetries": "3", "backOffInitialInterval": "10ms", "backOffMaxInterval": "2000"}, ""},
		{"maxRetries alias", map[string]string{"maxRetries": "0"}, ""},
		{"case insensitive", map[string]string{"QUEUEDEPTH": "5"}, ""},
		{"bad queueDepth", map[string]string{"queueDepth": "x"}, `"queueDepth"`},
		{"zero concurrency", map[string]string{"concurrency": "0"}, `"concurrency"`},
		{"bad duration", map[string]string{"backOffInitialInterval": "soon"}, `"backOffInitialInterval"`},
		{"zero backoff", map[string]string{"backOffInitialInterval": "0"}, `"backOffInitialInterval"`},
		{"retries below -1", map[string]string{"backOffMaxRetries": "-2"}, `"backOffMaxRetries"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Factory{}.ValidateMetadata(tc.md)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "pubsub/in-memory: ") {
				t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestDelivery(t *testing.T) {
	tests := []struct {
		name      string
		groups    []string // one subscription per entry
		n         int
		wantTotal map[string]int // per group: messages received in total
	}{
		{"one subscriber gets all", []string{"a"}, 500, map[string]int{"a": 500}},
		{"same group shares", []string{"a", "a", "a"}, 600, map[string]int{"a": 600}},
		{"different groups each get all", []string{"a", "b"}, 300, map[string]int{"a": 300, "b": 300}},
		{"empty groups are independent", []string{"", ""}, 100, map[string]int{"": 200}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(t, map[string]string{"concurrency": "4"})
			cols := make([]*collector, len(tc.groups))
			for i, g := range tc.groups {
				cols[i] = &collector{}
				stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: g}, cols[i].deliver)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(stop)
			}
			publish(t, b, "t", tc.n)
			publish(t, b, "other", 10) // nobody listens there
			total := func(g string) int {
				n := 0
				for i, gg := range tc.groups {
					if gg == g {
						n += int(cols[i].n.Load())
					}
				}
				return n
			}
			for g, want := range tc.wantTotal {
				pubsubtest.WaitFor(t, 5*time.Second, "group "+g+" deliveries", func() bool { return total(g) >= want })
				if got := total(g); got != want {
					t.Errorf("group %q got %d, want %d", g, got, want)
				}
			}
			// Within a group every message is seen exactly once.
			perGroup := map[string]map[string]int{}
			for i, g := range tc.groups {
				if g == "" {
					g = fmt.Sprint("anon", i)
				}
				if perGroup[g] == nil {
					perGroup[g] = map[string]int{}
				}
				cols[i].mu.Lock()
				for k, v := range cols[i].seen {
					perGroup[g][k] += v
				}
				cols[i].mu.Unlock()
			}
			for g, seen := range perGroup {
				if len(seen) != tc.n {
					t.Errorf("group %s saw %d distinct messages, want %d", g, len(seen), tc.n)
				}
				for k, v := range seen {
					if v != 1 {
						t.Errorf("group %s saw %s %d times", g, k, v)
					}
				}
			}
		})
	}
}

func TestPublishDoesNotWaitForSubscriber(t *testing.T) {
	b := newBroker(t, map[string]string{"concurrency": "1", "queueDepth": "100"})
	release := make(chan struct{})
	var got atomic.Int64
	stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		<-release
		got.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for i := range 50 {
		if err := b.Publish(ctx, "t", &pubsub.Message{Data: []byte{byte(i)}}); err != nil {
			t.Fatalf("publish %d blocked on a busy subscriber: %v", i, err)
		}
	}
	if got.Load() != 0 {
		t.Fatal("delivered before release")
	}
	close(release)
	pubsubtest.WaitFor(t, 5*time.Second, "50 deliveries", func() bool { return got.Load() == 50 })
}

func TestFullQueueBlocksPublishAndKeepsMessages(t *testing.T) {
	b := newBroker(t, map[string]string{"concurrency": "1", "queueDepth": "2"})
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	var got atomic.Int64
	stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		started <- struct{}{}
		<-release
		got.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	publish(t, b, "t", 1)
	<-started // one in flight
	publish(t, b, "t", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = b.Publish(ctx, "t", &pubsub.Message{Data: []byte("x")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish into a full queue: err = %v, want deadline exceeded", err)
	}
	// A publisher that waits gets in once there is room.
	done := make(chan error, 1)
	go func() { done <- b.Publish(context.Background(), "t", &pubsub.Message{Data: []byte("y")}) }()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pubsubtest.WaitFor(t, 5*time.Second, "4 deliveries", func() bool { return got.Load() == 4 })
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		md           map[string]string
		failFirst    int   // attempts that fail
		failWith     error // error returned by failing attempts
		wantAttempts int64
	}{
		{"success first time", nil, 0, errors.New("x"), 1},
		{"redelivered until success", nil, 3, errors.New("app said RETRY"), 4},
		{"drop acknowledges", nil, 100, fmt.Errorf("app: %w", pubsub.ErrDrop), 1},
		{"maxRetries gives up", map[string]string{"backOffMaxRetries": "2"}, 100, errors.New("x"), 3},
		{"maxRetries zero", map[string]string{"maxRetries": "0"}, 100, errors.New("x"), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			md := map[string]string{"backOffInitialInterval": "1ms", "backOffMaxInterval": "4ms", "concurrency": "1"}
			for k, v := range tc.md {
				md[k] = v
			}
			b := newBroker(t, md)
			var attempts, lastAttempt atomic.Int64
			var second atomic.Bool
			stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
				if string(m.Data) == "second" {
					second.Store(true)
					return nil
				}
				n := attempts.Add(1)
				lastAttempt.Store(int64(m.Attempt))
				if n <= int64(tc.failFirst) {
					return tc.failWith
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			pub := func(data string) {
				if err := b.Publish(context.Background(), "t", &pubsub.Message{Data: []byte(data)}); err != nil {
					t.Fatal(err)
				}
			}
			pub("first")
			pubsubtest.WaitFor(t, 5*time.Second, "attempts", func() bool { return attempts.Load() >= tc.wantAttempts })
			// With concurrency 1 the next message is only taken once the
			// first is settled: its arrival proves no further attempt.
			pub("second")
			pubsubtest.WaitFor(t, 5*time.Second, "second message", second.Load)
			if got := attempts.Load(); got != tc.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tc.wantAttempts)
			}
			if got := lastAttempt.Load(); got != tc.wantAttempts {
				t.Errorf("last Message.Attempt = %d, want %d", got, tc.wantAttempts)
			}
		})
	}
}

func TestStopWaitsAndRequeues(t *testing.T) {
	b := newBroker(t, map[string]string{"concurrency": "1", "backOffInitialInterval": "1h"})
	var failing atomic.Int64
	stop1, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		failing.Add(1)
		return errors.New("fail")
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	publish(t, b, "t", 1)
	pubsubtest.WaitFor(t, 5*time.Second, "first attempt", func() bool { return failing.Load() == 1 })
	stop2, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: "g"}, c.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	// stop1 interrupts the hour-long backoff; the message goes back to the
	// group and the other member gets it.
	stopped := make(chan struct{})
	go func() { stop1(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return")
	}
	pubsubtest.WaitFor(t, 5*time.Second, "redelivery to the other member", func() bool { return c.n.Load() == 1 })
}

func TestStopWaitsForInFlight(t *testing.T) {
	b := newBroker(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		close(entered)
		<-release
		finished.Store(true)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, "t", 1)
	<-entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while a delivery was in flight")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-stopped
	if !finished.Load() {
		t.Fatal("delivery did not finish")
	}
}

func TestClose(t *testing.T) {
	b := newBroker(t, nil)
	if _, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t"}, (&collector{}).deliver); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), "t", &pubsub.Message{}); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after close: %v", err)
	}
	if _, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "t"}, (&collector{}).deliver); !errors.Is(err, ErrClosed) {
		t.Errorf("subscribe after close: %v", err)
	}
}

func BenchmarkPublishWithSubscriber(b *testing.B) {
	br := newBroker(b, nil)
	var got atomic.Int64
	stop, err := br.Subscribe(context.Background(), pubsub.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		got.Add(1)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	msg := &pubsub.Message{Data: []byte(`{"data":{"orderId":1},"id":"x","type":"com.dapr.event.sent","specversion":"1.0"}`), ContentType: "application/cloudevents+json"}
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := br.Publish(ctx, "t", msg); err != nil {
			b.Fatal(err)
		}
	}
	for got.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
