package redis

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/pubsubtest"
)

// fast makes redelivery quick enough for tests.
var fast = map[string]string{"processingTimeout": "300ms", "redeliverInterval": "50ms", "readTimeout": "100ms"}

func newBroker(t testing.TB, addr string, extra map[string]string) *Broker {
	t.Helper()
	md := map[string]string{"redisHost": addr}
	maps.Copy(md, fast)
	maps.Copy(md, extra)
	return pubsubtest.NewBroker(t, Type, md).(*Broker)
}

func publishN(t testing.TB, b pubsub.Broker, topic string, n int) {
	t.Helper()
	for i := range n {
		m := &pubsub.Message{Data: []byte(fmt.Sprint("m", i)), Metadata: map[string]string{"i": fmt.Sprint(i)}}
		if err := b.Publish(context.Background(), topic, m); err != nil {
			t.Fatal(err)
		}
		if m.ID == "" {
			t.Fatal("publish did not set the entry id")
		}
	}
}

func TestValidateMetadata(t *testing.T) {
	tests := []struct {
		name    string
		md      map[string]string
		wantErr string
	}{
		{"minimal", map[string]string{"redisHost": "localhost:6379"}, ""},
		{"host without port", map[string]string{"redisHost": "localhost"}, ""},
		{"all keys", map[string]string{"redisHost": "h:1", "redisPassword": "p", "redisDB": "2", "consumerID": "c", "maxLenApprox": "1000",
			"processingTimeout": "30s", "redeliverInterval": "5000", "queueDepth": "10", "concurrency": "3", "enableTLS": "false", "readTimeout": "1s"}, ""},
		{"missing host", map[string]string{}, `"redisHost": is required`},
		{"bad db", map[string]string{"redisHost": "h:1", "redisDB": "x"}, `"redisDB"`},
		{"bad processingTimeout", map[string]string{"redisHost": "h:1", "processingTimeout": "1y"}, `"processingTimeout"`},
		{"zero concurrency", map[string]string{"redisHost": "h:1", "concurrency": "0"}, `"concurrency"`},
		{"tls", map[string]string{"redisHost": "h:1", "enableTLS": "true"}, `"enableTLS"`},
		{"cluster", map[string]string{"redisHost": "h:1", "redisType": "cluster"}, `"redisType"`},
		{"several hosts", map[string]string{"redisHost": "a:1,b:2"}, `"redisHost"`},
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
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "pubsub/redis: ") {
				t.Fatalf("err = %v, want one with %s", err, tc.wantErr)
			}
		})
	}
}

func TestNewFailsWithoutRedis(t *testing.T) {
	port := pubsubtest.FreePort(t)
	_, err := Factory{}.New(context.Background(), pubsub.Options{Metadata: map[string]string{"redisHost": fmt.Sprint("127.0.0.1:", port), "dialTimeout": "200ms"}})
	if err == nil || !strings.HasPrefix(err.Error(), "pubsub/redis: connect") {
		t.Fatalf("err = %v", err)
	}
}

func TestPublishSubscribe(t *testing.T) {
	addr, _, _ := pubsubtest.StartRedis(t)
	tests := []struct {
		name   string
		groups []string
		extra  map[string]string
		n      int
	}{
		{"one subscriber gets all", []string{"g"}, nil, 300},
		{"one at a time", []string{"g"}, map[string]string{"concurrency": "1", "queueDepth": "1"}, 50},
		{"two groups each get all", []string{"a", "b"}, nil, 200},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topic := fmt.Sprint("topic-", i)
			b := newBroker(t, addr, tc.extra)
			cols := map[string]*pubsubtest.Collector{}
			for _, g := range tc.groups {
				cols[g] = &pubsubtest.Collector{}
				pubsubtest.Subscribe(t, b, topic, g, cols[g])
			}
			publishN(t, b, topic, tc.n)
			for g, c := range cols {
				pubsubtest.WaitFor(t, 10*time.Second, "group "+g+" deliveries", func() bool { return c.Distinct() == tc.n })
			}
			for g, c := range cols {
				c.Mu.Lock()
				for k, v := range c.Seen {
					if v != 1 {
						t.Errorf("group %s got %s %d times", g, k, v)
					}
					if c.Attempts[k] != 1 {
						t.Errorf("group %s: %s attempt %d, want 1", g, k, c.Attempts[k])
					}
				}
				c.Mu.Unlock()
			}
			// Every entry is acknowledged (the last acks may still be on
			// their way when the last delivery is seen).
			for _, g := range tc.groups {
				pubsubtest.WaitFor(t, 5*time.Second, "group "+g+" acknowledges every entry", func() bool {
					p, err := b.Client().XPending(context.Background(), topic, g).Result()
					if err != nil {
						t.Fatal(err)
					}
					return p.Count == 0
				})
			}
		})
	}
}

func TestEntryFormatIsDaprd(t *testing.T) {
	addr, _, _ := pubsubtest.StartRedis(t)
	b := newBroker(t, addr, nil)
	m := &pubsub.Message{Data: []byte(`{"id":"1"}`), Metadata: map[string]string{"rawPayload": "true"}}
	if err := b.Publish(context.Background(), "fmt", m); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), "fmt", &pubsub.Message{Data: []byte("no md")}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Client().XRange(context.Background(), "fmt", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != m.ID {
		t.Fatalf("entries = %v", got)
	}
	want0 := map[string]any{"data": `{"id":"1"}`, "metadata": `{"rawPayload":"true"}`}
	want1 := map[string]any{"data": "no md"}
	if !maps.Equal(got[0].Values, want0) || !maps.Equal(got[1].Values, want1) {
		t.Errorf("entries %v, want %v and %v", got[0].Values, want0, want1)
	}

	// And an entry as daprd writes it is read back with its metadata.
	if err := b.Client().XAdd(context.Background(), &goredis.XAddArgs{Stream: "fmt2", Values: []any{"data", "from daprd", "metadata", `{"k":"v"}`}}).Err(); err != nil {
		t.Fatal(err)
	}
	got2 := make(chan *pubsub.Message, 1)
	stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "fmt2", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		got2 <- m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case m := <-got2:
		if string(m.Data) != "from daprd" || m.Metadata["k"] != "v" || m.Topic != "fmt2" {
			t.Errorf("delivered %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
	}
}

func TestFailedDeliveryIsRedelivered(t *testing.T) {
	addr, _, _ := pubsubtest.StartRedis(t)
	tests := []struct {
		name         string
		failWith     error
		fails        int
		wantAttempts int
	}{
		{"retry until success", errors.New("app said RETRY"), 2, 3},
		{"drop is acknowledged", fmt.Errorf("404: %w", pubsub.ErrDrop), 1, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topic := fmt.Sprint("retry-", i)
			b := newBroker(t, addr, nil)
			var calls atomic.Int64
			c := &pubsubtest.Collector{Fail: func(m *pubsub.Message) error {
				if calls.Add(1) <= int64(tc.fails) {
					return tc.failWith
				}
				return nil
			}}
			pubsubtest.Subscribe(t, b, topic, "g", c)
			publishN(t, b, topic, 1)
			if tc.wantAttempts == 0 {
				// Dropped: acknowledged, never delivered again.
				pubsubtest.WaitFor(t, 5*time.Second, "ack of the dropped entry", func() bool {
					p, err := b.Client().XPending(context.Background(), topic, "g").Result()
					return err == nil && p.Count == 0 && calls.Load() == 1
				})
				time.Sleep(500 * time.Millisecond) // longer than processingTimeout: a redelivery would show
				if calls.Load() != 1 {
					t.Fatalf("dropped entry delivered %d times", calls.Load())
				}
				return
			}
			pubsubtest.WaitFor(t, 10*time.Second, "successful redelivery", func() bool { return c.N.Load() == 1 })
			c.Mu.Lock()
			defer c.Mu.Unlock()
			if got := c.Attempts["m0"]; got != tc.wantAttempts {
				t.Errorf("attempt = %d, want %d", got, tc.wantAttempts)
			}
			if calls.Load() != int64(tc.wantAttempts) {
				t.Errorf("calls = %d, want %d", calls.Load(), tc.wantAttempts)
			}
		})
	}
}

func TestDeadConsumerEntriesAreReclaimed(t *testing.T) {
	addr, _, _ := pubsubtest.StartRedis(t)
	// The first process takes the entries and hangs on them (it ignores
	// its context, as a wedged app or a dead process would).
	hung := newBroker(t, addr, map[string]string{"concurrency": "5"})
	release := make(chan struct{})
	var took atomic.Int64
	stopHung, err := hung.Subscribe(context.Background(), pubsub.Subscription{Topic: "work", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		took.Add(1)
		<-release
		return errors.New("too late")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(release); stopHung() })
	publishN(t, hung, "work", 5)
	pubsubtest.WaitFor(t, 5*time.Second, "hung consumer took the entries", func() bool { return took.Load() == 5 })

	// A second process of the same group gets them after processingTimeout.
	other := newBroker(t, addr, nil)
	c := &pubsubtest.Collector{}
	pubsubtest.Subscribe(t, other, "work", "g", c)
	pubsubtest.WaitFor(t, 10*time.Second, "reclaimed deliveries", func() bool { return c.Distinct() == 5 })
	c.Mu.Lock()
	for k, a := range c.Attempts {
		if a < 2 {
			t.Errorf("%s attempt %d, want >= 2", k, a)
		}
	}
	c.Mu.Unlock()
	pubsubtest.WaitFor(t, 5*time.Second, "acknowledged", func() bool {
		p, err := other.Client().XPending(context.Background(), "work", "g").Result()
		return err == nil && p.Count == 0
	})
}

func TestRestartLosesNothing(t *testing.T) {
	addr, restart, _ := pubsubtest.StartRedis(t)
	b := newBroker(t, addr, nil)
	// The group exists before the restart, so the entries are for it.
	c := &pubsubtest.Collector{}
	stop := pubsubtest.Subscribe(t, b, "durable", "g", c)
	stop()
	publishN(t, b, "durable", 100)
	restart()
	b2 := newBroker(t, addr, nil)
	pubsubtest.Subscribe(t, b2, "durable", "g", c)
	pubsubtest.WaitFor(t, 10*time.Second, "100 deliveries after restart", func() bool { return c.Distinct() == 100 })

	// The first broker reconnects by itself.
	if err := b.Publish(context.Background(), "durable", &pubsub.Message{Data: []byte("after")}); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	pubsubtest.WaitFor(t, 10*time.Second, "delivery of a message published after the restart", func() bool { return c.Distinct() == 101 })
}

func TestStopWaitsForInFlight(t *testing.T) {
	addr, _, _ := pubsubtest.StartRedis(t)
	b := newBroker(t, addr, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "inflight", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		close(entered)
		<-release
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "inflight", 1)
	<-entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned with a delivery in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return")
	}
	p, err := b.Client().XPending(context.Background(), "inflight", "g").Result()
	if err != nil || p.Count != 0 {
		t.Fatalf("pending after stop: %+v %v", p, err)
	}
}

func BenchmarkPublish(b *testing.B) {
	addr, _, _ := pubsubtest.StartRedis(b)
	br := newBroker(b, addr, map[string]string{"maxLenApprox": "10000"})
	msg := &pubsub.Message{Data: []byte(`{"data":{"orderId":1},"id":"x","type":"com.dapr.event.sent","specversion":"1.0"}`), Metadata: map[string]string{}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := br.Publish(ctx, "bench", msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublishParallel(b *testing.B) {
	addr, _, _ := pubsubtest.StartRedis(b)
	br := newBroker(b, addr, map[string]string{"maxLenApprox": "10000"})
	data := []byte(`{"data":{"orderId":1},"id":"x","type":"com.dapr.event.sent","specversion":"1.0"}`)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := br.Publish(context.Background(), "bench", &pubsub.Message{Data: data}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
