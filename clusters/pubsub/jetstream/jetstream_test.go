package jetstream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/pubsubtest"
)

var fast = map[string]string{"nakDelay": "20ms", "reconnectWait": "50ms", "ackWait": "2s"}

func newBroker(t testing.TB, url string, extra map[string]string) *Broker {
	t.Helper()
	md := map[string]string{"natsURL": url}
	maps.Copy(md, fast)
	maps.Copy(md, extra)
	return pubsubtest.NewBroker(t, Type, md).(*Broker)
}

func publishN(t testing.TB, b pubsub.Broker, topic, prefix string, n int) {
	t.Helper()
	for i := range n {
		m := &pubsub.Message{Data: []byte(fmt.Sprint(prefix, i)), ContentType: "text/plain", Metadata: map[string]string{"k": "v"}}
		if err := b.Publish(context.Background(), topic, m); err != nil {
			t.Fatal(err)
		}
		if m.ID == "" {
			t.Fatal("publish did not set the sequence")
		}
	}
}

func TestValidateMetadata(t *testing.T) {
	tests := []struct {
		name    string
		md      map[string]string
		wantErr string
	}{
		{"minimal", map[string]string{"natsURL": "nats://localhost:4222"}, ""},
		{"all keys", map[string]string{"natsURL": "nats://h:1", "streamName": "S", "durableName": "d", "ackWait": "10s", "maxDeliver": "5",
			"deliverPolicy": "new", "nakDelay": "500", "concurrency": "2", "token": "t", "name": "n"}, ""},
		{"missing url", map[string]string{}, `"natsURL": is required`},
		{"bad ackWait", map[string]string{"natsURL": "n", "ackWait": "x"}, `"ackWait"`},
		{"zero maxDeliver", map[string]string{"natsURL": "n", "maxDeliver": "0"}, `"maxDeliver"`},
		{"bad deliverPolicy", map[string]string{"natsURL": "n", "deliverPolicy": "byStartTime"}, `"deliverPolicy"`},
		{"bad streamName", map[string]string{"natsURL": "n", "streamName": "a.b"}, `"streamName"`},
		{"bad durableName", map[string]string{"natsURL": "n", "durableName": "a b"}, `"durableName"`},
		{"concurrencyMode", map[string]string{"natsURL": "n", "concurrencyMode": "parallel"}, `"concurrencyMode"`},
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
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "pubsub/jetstream: ") {
				t.Fatalf("err = %v, want one with %s", err, tc.wantErr)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b", "a.b", true}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false}, {"a.>", "a.b.c", true},
		{"a.>", "a", false}, {"a", "a.b", false}, {">", "x", true},
	}
	for _, tc := range tests {
		if got := subjectMatches(tc.pattern, tc.subject); got != tc.want {
			t.Errorf("subjectMatches(%q, %q) = %v", tc.pattern, tc.subject, got)
		}
	}
	if streamNameFor("orders") != "orders" {
		t.Error("a valid name is kept")
	}
	if a, b := streamNameFor("a.b"), streamNameFor("a_b"); a == b || !validName(a) {
		t.Errorf("streamNameFor: %q %q", a, b)
	}
}

func TestPublishSubscribe(t *testing.T) {
	url, _, _ := pubsubtest.StartNATS(t)
	tests := []struct {
		name   string
		extra  map[string]string
		groups []string // one subscription each
		n      int
		want   map[string]int // distinct messages per group
	}{
		{"one subscriber gets all", nil, []string{"g"}, 200, map[string]int{"g": 200}},
		{"one at a time", map[string]string{"concurrency": "1"}, []string{"g"}, 30, map[string]int{"g": 30}},
		{"two groups each get all", nil, []string{"a", "b"}, 100, map[string]int{"a": 100, "b": 100}},
		{"same group shares", nil, []string{"a", "a"}, 100, map[string]int{"a": 100}},
		{"shared stream", map[string]string{"streamName": "ALL"}, []string{"g"}, 50, map[string]int{"g": 50}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topic := fmt.Sprintf("orders.t%d", i)
			b := newBroker(t, url, tc.extra)
			cols := make([]*pubsubtest.Collector, len(tc.groups))
			for j, g := range tc.groups {
				cols[j] = &pubsubtest.Collector{}
				pubsubtest.Subscribe(t, b, topic, g, cols[j])
			}
			publishN(t, b, topic, "m", tc.n)
			for g, want := range tc.want {
				distinct := func() int {
					seen := map[string]bool{}
					for j, gg := range tc.groups {
						if gg != g {
							continue
						}
						cols[j].Mu.Lock()
						for k := range cols[j].Seen {
							seen[k] = true
						}
						cols[j].Mu.Unlock()
					}
					return len(seen)
				}
				pubsubtest.WaitFor(t, 10*time.Second, "group "+g, func() bool { return distinct() == want })
			}
			total := int64(0)
			for _, c := range cols {
				total += c.N.Load()
				c.Mu.Lock()
				for _, m := range c.Msgs {
					if m.ContentType != "text/plain" || m.Metadata["k"] != "v" || m.Attempt != 1 || m.Topic != topic || m.ID == "" {
						t.Errorf("delivered %+v", m)
						break
					}
				}
				c.Mu.Unlock()
			}
			wantTotal := 0
			for _, w := range tc.want {
				wantTotal += w
			}
			if total != int64(wantTotal) {
				t.Errorf("%d deliveries, want %d", total, wantTotal)
			}
		})
	}
}

func TestCloudEventIDDeduplicates(t *testing.T) {
	url, _, _ := pubsubtest.StartNATS(t)
	b := newBroker(t, url, nil)
	ce := []byte(`{"specversion":"1.0","id":"same","type":"t","source":"s","data":"x"}`)
	for range 3 {
		if err := b.Publish(context.Background(), "dedup", &pubsub.Message{Data: ce}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := b.JetStream().Stream(context.Background(), "dedup")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream has %d messages, want 1", info.State.Msgs)
	}
}

func TestNakRedelivers(t *testing.T) {
	url, _, _ := pubsubtest.StartNATS(t)
	tests := []struct {
		name      string
		failWith  error
		fails     int64
		wantCalls int64
		delivered bool
	}{
		{"redelivered until success", errors.New("RETRY"), 2, 3, true},
		{"drop terminates", fmt.Errorf("404: %w", pubsub.ErrDrop), 100, 1, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topic := fmt.Sprint("nak", i)
			b := newBroker(t, url, nil)
			var calls atomic.Int64
			c := &pubsubtest.Collector{Fail: func(m *pubsub.Message) error {
				if calls.Add(1) <= tc.fails {
					return tc.failWith
				}
				return nil
			}}
			pubsubtest.Subscribe(t, b, topic, "g", c)
			publishN(t, b, topic, "m", 1)
			pubsubtest.WaitFor(t, 10*time.Second, "calls", func() bool { return calls.Load() >= tc.wantCalls })
			if tc.delivered {
				pubsubtest.WaitFor(t, 5*time.Second, "delivery", func() bool { return c.N.Load() == 1 })
				c.Mu.Lock()
				if c.Attempts["m0"] != int(tc.wantCalls) {
					t.Errorf("attempt %d, want %d", c.Attempts["m0"], tc.wantCalls)
				}
				c.Mu.Unlock()
			}
			// Nothing is left pending on the consumer.
			pubsubtest.WaitFor(t, 5*time.Second, "consumer settled", func() bool {
				cons, err := b.JetStream().Consumer(context.Background(), topic, "g")
				if err != nil {
					return false
				}
				info, err := cons.Info(context.Background())
				return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
			})
			if calls.Load() != tc.wantCalls {
				t.Errorf("calls = %d, want %d", calls.Load(), tc.wantCalls)
			}
		})
	}
}

func TestRestartKeepsUnacked(t *testing.T) {
	url, restart, _ := pubsubtest.StartNATS(t)
	b := newBroker(t, url, nil)
	// A subscriber that fails everything: messages are delivered, never acked.
	var calls atomic.Int64
	stop := pubsubtest.Subscribe(t, b, "keep", "g", &pubsubtest.Collector{Fail: func(*pubsub.Message) error { calls.Add(1); return errors.New("down") }})
	publishN(t, b, "keep", "a", 20)
	pubsubtest.WaitFor(t, 10*time.Second, "first attempts", func() bool { return calls.Load() >= 20 })
	stop()
	publishN(t, b, "keep", "b", 20) // never delivered before the restart

	restart()

	b2 := newBroker(t, url, nil)
	c := &pubsubtest.Collector{}
	pubsubtest.Subscribe(t, b2, "keep", "g", c)
	pubsubtest.WaitFor(t, 20*time.Second, "40 deliveries after the restart", func() bool { return c.Distinct() == 40 })

	// The first broker reconnected and publishes again.
	pubsubtest.WaitFor(t, 10*time.Second, "publish after restart", func() bool {
		return b.Publish(context.Background(), "keep", &pubsub.Message{Data: []byte("after")}) == nil
	})
	pubsubtest.WaitFor(t, 10*time.Second, "delivery after restart", func() bool { return c.Distinct() == 41 })
}

func TestDurableSurvivesSubscriberRestart(t *testing.T) {
	url, _, _ := pubsubtest.StartNATS(t)
	b := newBroker(t, url, nil)
	c1 := &pubsubtest.Collector{}
	stop := pubsubtest.Subscribe(t, b, "dur", "g", c1)
	publishN(t, b, "dur", "first", 10)
	pubsubtest.WaitFor(t, 10*time.Second, "first batch", func() bool { return c1.Distinct() == 10 })
	stop()
	publishN(t, b, "dur", "second", 10)

	b2 := newBroker(t, url, nil) // another process of the same app
	c2 := &pubsubtest.Collector{}
	pubsubtest.Subscribe(t, b2, "dur", "g", c2)
	pubsubtest.WaitFor(t, 10*time.Second, "second batch", func() bool { return c2.Distinct() == 10 })
	c2.Mu.Lock()
	defer c2.Mu.Unlock()
	for k := range c2.Seen {
		if !strings.HasPrefix(k, "second") {
			t.Errorf("the durable consumer delivered %s again", k)
		}
	}
}

func TestStopWaitsForInFlight(t *testing.T) {
	url, _, _ := pubsubtest.StartNATS(t)
	b := newBroker(t, url, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: "inflight", Group: "g"}, func(ctx context.Context, m *pubsub.Message) error {
		once.Do(func() { close(entered) })
		<-release
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "inflight", "m", 1)
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
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return")
	}
}

func BenchmarkPublish(b *testing.B) {
	url, _, _ := pubsubtest.StartNATS(b)
	br := newBroker(b, url, nil)
	msg := &pubsub.Message{Data: []byte(`{"orderId":1,"item":"book"}`), ContentType: "application/json"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := br.Publish(ctx, "bench", msg); err != nil {
			b.Fatal(err)
		}
	}
}
