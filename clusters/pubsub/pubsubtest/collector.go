package pubsubtest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
)

// Collector records what a subscription delivers. Tests read its fields
// under Mu.
type Collector struct {
	Mu       sync.Mutex
	Seen     map[string]int // deliveries per message data
	Attempts map[string]int // the last attempt number per message data
	Msgs     []*pubsub.Message
	N        atomic.Int64                  // deliveries in all
	Fail     func(m *pubsub.Message) error // optional: its error is the delivery's answer
}

// Deliver is the subscription's DeliverFunc.
func (c *Collector) Deliver(_ context.Context, m *pubsub.Message) error {
	if c.Fail != nil {
		if err := c.Fail(m); err != nil {
			return err
		}
	}
	c.Mu.Lock()
	if c.Seen == nil {
		c.Seen, c.Attempts = map[string]int{}, map[string]int{}
	}
	c.Seen[string(m.Data)]++
	c.Attempts[string(m.Data)] = m.Attempt
	c.Msgs = append(c.Msgs, m)
	c.Mu.Unlock()
	c.N.Add(1)
	return nil
}

// Distinct is how many different messages were delivered.
func (c *Collector) Distinct() int {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	return len(c.Seen)
}

// Subscribe subscribes c to topic for group on b, stopped when the test
// ends; it returns the stop function too.
func Subscribe(t testing.TB, b pubsub.Broker, topic, group string, c *Collector) func() {
	t.Helper()
	stop, err := b.Subscribe(context.Background(), pubsub.Subscription{Topic: topic, Group: group}, c.Deliver)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return stop
}
