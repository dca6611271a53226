package pubsubcluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/memory"
	"github.com/switchyard-proxy/switchyard/clusters/pubsubcluster"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/router"
)

// fakeBroker records what it is given and fails on demand.
type fakeBroker struct {
	mu   sync.Mutex
	msgs []pubsub.Message
	fail func(m *pubsub.Message) error
}

func (b *fakeBroker) Publish(_ context.Context, topic string, m *pubsub.Message) error {
	if b.fail != nil {
		if err := b.fail(m); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := *m
	c.Topic = topic
	c.Data = append([]byte(nil), m.Data...)
	b.msgs = append(b.msgs, c)
	return nil
}

func (b *fakeBroker) Subscribe(context.Context, pubsub.Subscription, pubsub.DeliverFunc) (func(), error) {
	return func() {}, nil
}
func (b *fakeBroker) Close() error { return nil }

func (b *fakeBroker) got() []pubsub.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]pubsub.Message(nil), b.msgs...)
}

func newExchange(pubsubName, topic, query, ct, body string, bulk bool) *filters.Exchange {
	ex := filters.AcquireExchange(true)
	ex.Req.Header.SetMethod("POST")
	uri := "/v1.0/publish/" + pubsubName + "/" + topic
	if query != "" {
		uri += "?" + query
	}
	ex.Req.SetRequestURI(uri)
	if ct != "" {
		ex.Req.Header.SetContentType(ct)
	}
	ex.Req.SetBodyString(body)
	ex.SetPublish(false, []byte(pubsubName), []byte(topic))
	ex.Bulk = bulk
	return ex
}

func statusOf(t *testing.T, err error, ex *filters.Exchange) (int, string) {
	t.Helper()
	if err != nil {
		fe := filters.AsError(err, filters.KindPublish)
		return fe.HTTPStatus, fe.Code
	}
	return ex.Resp.StatusCode(), ""
}

func TestPublishEnvelope(t *testing.T) {
	tests := []struct {
		name, query, ct, body string
		check                 func(t *testing.T, m pubsub.Message, ev map[string]any)
	}{
		{"json payload", "", "application/json", `{"a": 1}`, func(t *testing.T, m pubsub.Message, ev map[string]any) {
			if m.ContentType != "application/cloudevents+json" {
				t.Errorf("content type %q", m.ContentType)
			}
			for k, want := range map[string]any{"source": "orders", "type": "com.dapr.event.sent", "specversion": "1.0",
				"datacontenttype": "application/json", "topic": "a/b", "pubsubname": "pubsub",
				"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "traceid": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
				"tracestate": "k=v"} {
				if ev[k] != want {
					t.Errorf("%s = %v, want %v", k, ev[k], want)
				}
			}
			if d, _ := ev["data"].(map[string]any); d["a"] != 1.0 {
				t.Errorf("data = %v", ev["data"])
			}
			if id, _ := ev["id"].(string); len(id) != 36 {
				t.Errorf("id = %v", ev["id"])
			}
		}},
		{"binary payload", "", "application/octet-stream", "\x00\x01", func(t *testing.T, m pubsub.Message, ev map[string]any) {
			if ev["data_base64"] != "AAE=" {
				t.Errorf("data_base64 = %v", ev["data_base64"])
			}
		}},
		{"text payload", "", "", "hello", func(t *testing.T, m pubsub.Message, ev map[string]any) {
			if ev["data"] != "hello" || ev["datacontenttype"] != "text/plain" {
				t.Errorf("data = %v (%v)", ev["data"], ev["datacontenttype"])
			}
		}},
		{"existing cloud event keeps its fields", "", "application/cloudevents+json",
			`{"id":"my-id","source":"elsewhere","type":"my.type","specversion":"1.0","data":{"x":2},"custom":"kept"}`,
			func(t *testing.T, m pubsub.Message, ev map[string]any) {
				for k, want := range map[string]any{"id": "my-id", "source": "elsewhere", "type": "my.type", "custom": "kept", "topic": "a/b", "pubsubname": "pubsub"} {
					if ev[k] != want {
						t.Errorf("%s = %v, want %v", k, ev[k], want)
					}
				}
			}},
		{"cloud event missing fields are filled", "", "application/cloudevents+json", `{"data":"x"}`,
			func(t *testing.T, m pubsub.Message, ev map[string]any) {
				if ev["source"] != "orders" || ev["specversion"] != "1.0" || ev["type"] != "com.dapr.event.sent" || ev["id"] == "" {
					t.Errorf("not filled: %v", ev)
				}
			}},
		{"rawPayload", "metadata.rawPayload=true&other=1", "application/json", `{"raw":true}`, func(t *testing.T, m pubsub.Message, ev map[string]any) {
			if string(m.Data) != `{"raw":true}` || ev["id"] != nil {
				t.Errorf("raw data = %s", m.Data)
			}
			if m.Metadata["rawPayload"] != "true" || len(m.Metadata) != 1 {
				t.Errorf("metadata = %v", m.Metadata)
			}
		}},
		{"ttl metadata sets expiration", "metadata.ttlInSeconds=60", "text/plain", "x", func(t *testing.T, m pubsub.Message, ev map[string]any) {
			if ev["expiration"] == nil || m.Metadata["ttlInSeconds"] != "60" {
				t.Errorf("expiration = %v, metadata %v", ev["expiration"], m.Metadata)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb := &fakeBroker{}
			c := pubsubcluster.New(fb, pubsubcluster.Options{Name: "pubsub", AppID: "orders"})
			ex := newExchange("pubsub", "a/b", tc.query, tc.ct, tc.body, false)
			defer filters.ReleaseExchange(ex)
			ex.Req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			ex.Req.Header.Set("tracestate", "k=v")
			err := c.Handle(context.Background(), ex)
			if st, _ := statusOf(t, err, ex); st != http.StatusNoContent {
				t.Fatalf("status %d (%v)", st, err)
			}
			got := fb.got()
			if len(got) != 1 || got[0].Topic != "a/b" {
				t.Fatalf("broker got %+v", got)
			}
			var ev map[string]any
			_ = json.Unmarshal(got[0].Data, &ev)
			tc.check(t, got[0], ev)
		})
	}
}

func TestBrokerFailureIsNever204(t *testing.T) {
	fb := &fakeBroker{fail: func(*pubsub.Message) error { return errors.New("redis: connection refused") }}
	c := pubsubcluster.New(fb, pubsubcluster.Options{Name: "pubsub", AppID: "orders"})
	ex := newExchange("pubsub", "orders", "", "text/plain", "x", false)
	defer filters.ReleaseExchange(ex)
	err := c.Handle(context.Background(), ex)
	st, code := statusOf(t, err, ex)
	if st != http.StatusInternalServerError || code != filters.ErrCodePubSubPublish {
		t.Fatalf("got %d %s, want 500 %s", st, code, filters.ErrCodePubSubPublish)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("message %q lacks the cause", err)
	}
}

func TestScopes(t *testing.T) {
	tests := []struct {
		name  string
		md    map[string]string
		topic string
		want  int
	}{
		{"no scopes", nil, "orders", 204},
		{"allowedTopics allows", map[string]string{"allowedTopics": "orders,payments"}, "orders", 204},
		{"allowedTopics forbids", map[string]string{"allowedTopics": "payments"}, "orders", 403},
		{"publishingScopes of this app allow", map[string]string{"publishingScopes": "orders=orders;billing=payments"}, "orders", 204},
		{"publishingScopes of this app forbid", map[string]string{"publishingScopes": "orders=payments"}, "orders", 403},
		{"app listed with no topic may not publish", map[string]string{"publishingScopes": "orders=;billing=orders"}, "orders", 403},
		{"app not listed is not restricted", map[string]string{"publishingScopes": "billing=payments"}, "orders", 204},
		{"protected topic needs a scope", map[string]string{"protectedTopics": "orders"}, "orders", 403},
		{"protected topic with a scope", map[string]string{"protectedTopics": "orders", "publishingScopes": "orders=orders"}, "orders", 204},
		{"subscriptionScopes do not restrict publishing", map[string]string{"subscriptionScopes": "orders=payments"}, "orders", 204},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb := &fakeBroker{}
			c := pubsubcluster.New(fb, pubsubcluster.Options{Name: "pubsub", AppID: "orders", Metadata: tc.md})
			ex := newExchange("pubsub", tc.topic, "", "text/plain", "x", false)
			defer filters.ReleaseExchange(ex)
			err := c.Handle(context.Background(), ex)
			st, code := statusOf(t, err, ex)
			if st != tc.want {
				t.Fatalf("status %d (%v), want %d", st, err, tc.want)
			}
			if tc.want == 403 && (code != filters.ErrCodePubSubForbidden || len(fb.got()) != 0) {
				t.Fatalf("code %s, broker got %d", code, len(fb.got()))
			}
		})
	}
	c := pubsubcluster.New(&fakeBroker{}, pubsubcluster.Options{Name: "pubsub", AppID: "orders", Metadata: map[string]string{"subscriptionScopes": "orders=payments"}})
	if c.SubscribeAllowed("orders") || !c.SubscribeAllowed("payments") {
		t.Error("subscriptionScopes not applied to SubscribeAllowed")
	}
}

func TestBulk(t *testing.T) {
	body := `[
		{"entryId":"1","event":{"n":1},"contentType":"application/json"},
		{"entryId":"2","event":"plain","contentType":"text/plain","metadata":{"k":"v"}},
		{"entryId":"3","event":"AAE=","contentType":"application/octet-stream"},
		{"entryId":"4","event":{"id":"ce-4","source":"s","type":"t","specversion":"1.0"},"contentType":"application/cloudevents+json"}
	]`
	tests := []struct {
		name       string
		body       string
		failData   string
		wantStatus int
		wantFailed []string
		wantMsgs   int
	}{
		{"all taken", body, "", 204, nil, 4},
		{"one refused", body, `"plain"`, 500, []string{"2"}, 3},
		{"duplicate entry id", `[{"entryId":"1","event":1,"contentType":"application/json"},{"entryId":"1","event":2,"contentType":"application/json"}]`, "", 400, nil, 0},
		{"missing entry id", `[{"event":1,"contentType":"application/json"}]`, "", 400, nil, 0},
		{"not an array", `{}`, "", 400, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb := &fakeBroker{}
			if tc.failData != "" {
				fb.fail = func(m *pubsub.Message) error {
					if strings.Contains(string(m.Data), tc.failData) {
						return errors.New("refused")
					}
					return nil
				}
			}
			c := pubsubcluster.New(fb, pubsubcluster.Options{Name: "pubsub", AppID: "orders"})
			ex := newExchange("pubsub", "orders", "metadata.req=1", "application/json", tc.body, true)
			defer filters.ReleaseExchange(ex)
			err := c.Handle(context.Background(), ex)
			st, _ := statusOf(t, err, ex)
			if st != tc.wantStatus {
				t.Fatalf("status %d (%v), want %d", st, err, tc.wantStatus)
			}
			if n := len(fb.got()); n != tc.wantMsgs {
				t.Fatalf("broker took %d, want %d", n, tc.wantMsgs)
			}
			if tc.wantStatus == 500 {
				var res pubsubcluster.BulkResponse
				if err := json.Unmarshal(ex.Resp.Body(), &res); err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, f := range res.FailedEntries {
					ids = append(ids, f.EntryID)
				}
				if strings.Join(ids, ",") != strings.Join(tc.wantFailed, ",") || res.ErrorCode != filters.ErrCodePubSubPublish {
					t.Fatalf("response %s", ex.Resp.Body())
				}
			}
			if tc.wantStatus == 204 {
				byID := map[string]map[string]any{}
				for _, m := range fb.got() {
					var ev map[string]any
					_ = json.Unmarshal(m.Data, &ev)
					ct, _ := ev["datacontenttype"].(string)
					if ev["id"] == "ce-4" {
						ct = "application/cloudevents+json"
					}
					byID[m.Metadata["k"]+"|"+ct] = ev
					if m.Metadata["req"] != "1" {
						t.Errorf("request metadata not merged: %v", m.Metadata)
					}
				}
				if ev := byID["v|text/plain"]; ev == nil || ev["data"] != "plain" {
					t.Errorf("text entry: %v", byID)
				}
				if ev := byID["|application/octet-stream"]; ev == nil || ev["data_base64"] != "AAE=" {
					t.Errorf("binary entry: %v", byID)
				}
				if ev := byID["|application/cloudevents+json"]; ev == nil || ev["id"] != "ce-4" {
					t.Errorf("cloud event entry: %v", byID)
				}
			}
		})
	}
}

// TestThroughRouter builds components the way the cluster manager does and
// routes publishes: a known component answers 204, an unknown one 404.
func TestThroughRouter(t *testing.T) {
	m := clusters.NewManager(nil, 0)
	defer m.Close()
	cfg := &config.Config{AppID: "orders", Components: []config.Component{{Name: "pubsub", Type: "pubsub.in-memory", Version: "v1"}}}
	plan, err := m.Prepare(context.Background(), cfg, clusters.Env{AppID: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	plan.Commit()
	r, err := router.New(nil, plan.Set)
	if err != nil {
		t.Fatal(err)
	}
	h := plan.Set.PubSub([]byte("pubsub"))
	bp, ok := h.(interface{ Broker() pubsub.Broker })
	if !ok {
		t.Fatalf("component cluster %T does not expose its broker", h)
	}
	got := make(chan *pubsub.Message, 1)
	stop, err := bp.Broker().Subscribe(context.Background(), pubsub.Subscription{Topic: "orders", Group: "g"}, func(_ context.Context, m *pubsub.Message) error {
		got <- m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	tests := []struct {
		pubsub string
		want   int
		code   string
	}{
		{"pubsub", 204, ""},
		{"nope", 404, filters.ErrCodePubSubNotFound},
	}
	for _, tc := range tests {
		ex := newExchange(tc.pubsub, "orders", "", "text/plain", "hi", false)
		err := r.Handle(context.Background(), ex)
		st, code := statusOf(t, err, ex)
		filters.ReleaseExchange(ex)
		if st != tc.want || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.pubsub, st, code, tc.want, tc.code)
		}
	}
	select {
	case m := <-got:
		if !strings.Contains(string(m.Data), `"data":"hi"`) {
			t.Errorf("delivered %s", m.Data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("published message not delivered by the in-memory broker")
	}
	// An unknown broker type fails the build with the types available.
	_, err = m.Prepare(context.Background(), &config.Config{AppID: "orders", Components: []config.Component{{Name: "x", Type: "pubsub.nope"}}}, clusters.Env{AppID: "orders"})
	if err == nil || !strings.Contains(err.Error(), "pubsub.in-memory") {
		t.Errorf("unknown type: %v", err)
	}
}

func BenchmarkPublish(b *testing.B) {
	f, _ := pubsub.Get("pubsub.in-memory")
	br, err := f.New(context.Background(), pubsub.Options{Name: "pubsub"})
	if err != nil {
		b.Fatal(err)
	}
	c := pubsubcluster.New(br, pubsubcluster.Options{Name: "pubsub", AppID: "orders"})
	defer c.Close()
	ex := newExchange("pubsub", "orders", "", "application/json", `{"order":42,"items":["a","b"]}`, false)
	defer filters.ReleaseExchange(ex)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Handle(ctx, ex); err != nil {
			b.Fatal(err)
		}
	}
}
