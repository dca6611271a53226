package subscription

import (
	"context"
	"testing"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/cloudevents"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// fakeApp answers every delivery with a fixed status and body.
type fakeApp struct {
	status int
	body   []byte
}

func (a fakeApp) Handle(_ context.Context, ex *filters.Exchange) error {
	ex.Resp.SetStatusCode(a.status)
	ex.Resp.SetBodyRaw(a.body)
	return nil
}

type fakeClusters struct{ app filters.Handler }

func (c fakeClusters) Cluster(name string) filters.Handler {
	if name == config.LocalAppCluster {
		return c.app
	}
	return nil
}
func (c fakeClusters) App([]byte) (filters.Handler, error) { return c.app, nil }
func (c fakeClusters) PubSub([]byte) filters.Handler       { return nil }

func benchSub(b *testing.B, app fakeApp, rules []config.SubscriptionRule) *sub {
	ch, err := filters.BuildChain(nil, filters.Env{Logger: zap.NewNop(), Clusters: fakeClusters{app: app}})
	if err != nil {
		b.Fatal(err)
	}
	ref := &listeners.ChainRef{}
	ref.Store(ch)
	l := &Listener{name: "subs", chain: ref, log: zap.NewNop(), opts: Options{DeliveryTimeout: 1e9, RetryBackoff: 1e6}}
	s, err := l.newSub(collected{cfg: config.Subscription{PubSub: "pubsub", Topic: "orders", Route: "/orders", Rules: rules}})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchMessage(b *testing.B) *pubsub.Message {
	data, err := cloudevents.New(cloudevents.Options{Source: "orders", Topic: "orders", PubSub: "pubsub",
		DataContentType: "application/json", Data: []byte(`{"order":42,"amount":120}`),
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	if err != nil {
		b.Fatal(err)
	}
	return &pubsub.Message{ID: "1", Topic: "orders", Data: data}
}

// BenchmarkDeliver is one delivery through the chain (router -> app
// cluster) and the mapping of the app's answer, without the network.
func BenchmarkDeliver(b *testing.B) {
	for _, bc := range []struct {
		name  string
		app   fakeApp
		rules []config.SubscriptionRule
	}{
		{"empty 200", fakeApp{status: 200}, nil},
		{"SUCCESS body", fakeApp{status: 200, body: []byte(`{"status":"SUCCESS"}`)}, nil},
		{"CEL rule", fakeApp{status: 200}, []config.SubscriptionRule{{Match: `event.data.amount > 100.0`, Path: "/big"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := benchSub(b, bc.app, bc.rules)
			msg := benchMessage(b)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.deliver(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMapResponse(b *testing.B) {
	body := []byte(`{"status":"SUCCESS"}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if MapResponse(200, body) != Ack {
			b.Fatal("not acked")
		}
	}
}
