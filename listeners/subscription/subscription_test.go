package subscription_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/memory"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsubcluster"
	"github.com/switchyard-proxy/switchyard/config"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/listeners"
	_ "github.com/switchyard-proxy/switchyard/listeners/http"
	"github.com/switchyard-proxy/switchyard/listeners/subscription"
)

func TestMapResponse(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   subscription.Outcome
	}{
		{"200 empty", 200, "", subscription.Ack},
		{"204 empty", 204, "", subscription.Ack},
		{"200 SUCCESS", 200, `{"status":"SUCCESS"}`, subscription.Ack},
		{"200 success lower case", 200, `{"status":"success"}`, subscription.Ack},
		{"200 other JSON", 200, `{"ok":true}`, subscription.Ack},
		{"200 not JSON", 200, `thanks`, subscription.Ack},
		{"200 empty status", 200, `{"status":""}`, subscription.Ack},
		{"200 RETRY", 200, `{"status":"RETRY"}`, subscription.Retry},
		{"200 unknown status", 200, `{"status":"MAYBE"}`, subscription.Retry},
		{"200 DROP", 200, `{"status":"DROP"}`, subscription.Drop},
		{"DROP with spaces", 200, ` { "status" : "DROP" }`, subscription.Drop},
		{"status not first", 200, `{"data":1,"status":"RETRY"}`, subscription.Retry},
		{"404", 404, "", subscription.Drop},
		{"400", 400, "", subscription.Retry},
		{"500", 500, `{"status":"SUCCESS"}`, subscription.Retry},
		{"503", 503, "", subscription.Retry},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := subscription.MapResponse(tc.status, []byte(tc.body)); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// app is a real HTTP app on 127.0.0.1: it answers per path and records
// every delivery.
type app struct {
	mu       sync.Mutex
	answers  map[string]func() (int, string)
	received map[string][]map[string]any
	hdrs     map[string]http.Header
	port     int
	subs     string
}

func startApp(t *testing.T, subs string, answers map[string]func() (int, string)) *app {
	t.Helper()
	a := &app{answers: answers, received: map[string][]map[string]any{}, hdrs: map[string]http.Header{}, subs: subs}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: a}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/dapr/subscribe" {
		if a.subs == "" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(a.subs))
		return
	}
	b, _ := io.ReadAll(r.Body)
	var ev map[string]any
	_ = json.Unmarshal(b, &ev)
	a.mu.Lock()
	a.received[r.URL.Path] = append(a.received[r.URL.Path], ev)
	a.hdrs[r.URL.Path] = r.Header.Clone()
	f := a.answers[r.URL.Path]
	a.mu.Unlock()
	status, body := 200, ""
	if f != nil {
		status, body = f()
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func (a *app) got(path string) []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.received[path]...)
}

type sidecar struct {
	rt  *listeners.Runtime
	mgr *listeners.Manager
}

// startSidecar runs the listener manager in process with an HTTP listener
// (to publish) and the subscription listener.
func startSidecar(t *testing.T, a *app, subs []config.Subscription) (*sidecar, string) {
	t.Helper()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	httpAddr := ln.Addr().String()
	ln.Close()
	cfg := &config.Config{
		AppID: "orders", Namespace: "default", AppPort: a.port, AppProtocol: "http", AppChannelAddress: "127.0.0.1",
		Listeners: []config.Listener{
			{Name: "dapr_http", Kind: config.ListenerHTTP, Addresses: []string{httpAddr}, Filters: []config.FilterSpec{{Name: "router"}}},
			{Name: "subs", Kind: config.ListenerSubscription, Filters: []config.FilterSpec{{Name: "router"}}},
		},
		Components: []config.Component{{Name: "pubsub", Type: "pubsub.in-memory", Version: "v1",
			Metadata: map[string]string{"backOffInitialInterval": "5ms", "backOffMaxInterval": "20ms"}}},
		Subscriptions: subs,
	}
	rt := &listeners.Runtime{Stats: stats.NewRegistry("dapr_")}
	mgr := listeners.NewManager(rt, 100*time.Millisecond)
	if err := mgr.Apply(context.Background(), config.NewSnapshot(cfg, "test")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close(context.Background()) })
	rt.Health.SetAppReady(true)
	s := &sidecar{rt: rt, mgr: mgr}
	waitFor(t, func() bool {
		return len(rt.Metadata().Subscriptions) >= len(subs) && (a.subs == "" || len(rt.Metadata().Subscriptions) > len(subs))
	}, "subscriptions")
	return s, "http://" + httpAddr
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func publish(t *testing.T, base, topic, ct, body string) {
	t.Helper()
	resp, err := http.Post(base+"/v1.0/publish/pubsub/"+topic, ct, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("publish: %d %s", resp.StatusCode, b)
	}
}

func metric(t *testing.T, rt *listeners.Runtime, substr string) string {
	var sb strings.Builder
	_ = rt.Stats.WritePrometheus(&sb)
	for _, line := range strings.Split(sb.String(), "\n") {
		if strings.Contains(line, "dapr_component_pubsub_ingress_count") && strings.Contains(line, substr) {
			return line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	return ""
}

// TestDeliveryOutcomes publishes to topics whose route answers each way and
// counts the deliveries: acked ones once, retried ones again, dropped ones
// once with the drop metric.
func TestDeliveryOutcomes(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	answer := func(path string, seq ...[2]any) func() (int, string) {
		return func() (int, string) {
			mu.Lock()
			defer mu.Unlock()
			n := calls[path]
			calls[path]++
			s := seq[min(n, len(seq)-1)]
			return s[0].(int), s[1].(string)
		}
	}
	tests := []struct {
		name     string
		answers  [][2]any
		outcome  string
		attempts int // deliveries expected (at least)
	}{
		{"200 empty", [][2]any{{200, ""}}, "success", 1},
		{"200 SUCCESS", [][2]any{{200, `{"status":"SUCCESS"}`}}, "success", 1},
		{"RETRY then SUCCESS", [][2]any{{200, `{"status":"RETRY"}`}, {200, ""}}, "retry", 2},
		{"500 then 200", [][2]any{{500, "boom"}, {200, ""}}, "retry", 2},
		{"DROP", [][2]any{{200, `{"status":"DROP"}`}}, "drop", 1},
		{"404", [][2]any{{404, ""}}, "drop", 1},
	}
	answers := map[string]func() (int, string){}
	var subs []config.Subscription
	for i, tc := range tests {
		path := "/t" + strconv.Itoa(i)
		answers[path] = answer(path, tc.answers...)
		subs = append(subs, config.Subscription{PubSub: "pubsub", Topic: "topic" + strconv.Itoa(i), Route: path})
	}
	a := startApp(t, "", answers)
	sc, base := startSidecar(t, a, subs)
	for i := range tests {
		publish(t, base, "topic"+strconv.Itoa(i), "application/json", `{"n":`+strconv.Itoa(i)+`}`)
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := "/t" + strconv.Itoa(i)
			waitFor(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return calls[path] >= tc.attempts
			}, path)
			topic := `topic="topic` + strconv.Itoa(i) + `"`
			waitFor(t, func() bool {
				v := metric(t, sc.rt, `process_status="`+tc.outcome+`",`+topic)
				return v != "" && v != "0"
			}, tc.outcome+" metric")
			if tc.outcome != "drop" {
				waitFor(t, func() bool { return metric(t, sc.rt, `process_status="success",`+topic) == "1" }, "success metric")
			}
			// nothing more arrives once acked or dropped
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			n := calls[path]
			mu.Unlock()
			if n != tc.attempts {
				t.Fatalf("%d deliveries, want %d", n, tc.attempts)
			}
			ev := a.got(path)[0]
			if ev["topic"] != "topic"+strconv.Itoa(i) || ev["pubsubname"] != "pubsub" || ev["source"] != "orders" {
				t.Errorf("event %v", ev)
			}
		})
	}
	a.mu.Lock()
	ct := a.hdrs["/t0"].Get("Content-Type")
	a.mu.Unlock()
	if ct != "application/cloudevents+json" {
		t.Errorf("content type %q", ct)
	}
}

// TestRoutingRulesAndProgrammatic: v2alpha1 rules from /dapr/subscribe
// evaluated with CEL over the event.
func TestRoutingRulesAndProgrammatic(t *testing.T) {
	subs := `[{"pubsubname":"pubsub","topic":"orders","routes":{"rules":[
		{"match":"event.type == \"big.order\"","path":"/big"},
		{"match":"event.data.amount > 100.0","path":"/large"}],"default":"/other"}},
		{"pubsubname":"pubsub","topic":"legacy","route":"legacy-path"}]`
	a := startApp(t, subs, nil)
	sc, base := startSidecar(t, a, nil)
	publish(t, base, "orders", "application/json", `{"amount":500}`)
	publish(t, base, "orders", "application/json", `{"amount":5}`)
	publish(t, base, "orders", "application/cloudevents+json", `{"type":"big.order","data":{"amount":1}}`)
	publish(t, base, "legacy", "text/plain", `hi`)
	for path, n := range map[string]int{"/big": 1, "/large": 1, "/other": 1, "/legacy-path": 1} {
		waitFor(t, func() bool { return len(a.got(path)) == n }, path)
	}
	if d := a.got("/large")[0]["data"].(map[string]any); d["amount"] != 500.0 {
		t.Errorf("/large got %v", d)
	}
	md := sc.rt.Metadata().Subscriptions
	if len(md) != 2 || md[0].Type != "PROGRAMMATIC" || len(md[0].Rules) != 3 {
		t.Errorf("metadata subscriptions %+v", md)
	}
}

// TestDeadLetter: a delivery that keeps failing is retried maxRetries times
// in the listener, then published to the dead-letter topic; a dropped one
// goes there too.
func TestDeadLetter(t *testing.T) {
	var mu sync.Mutex
	fails := 0
	a := startApp(t, "", map[string]func() (int, string){
		"/fail": func() (int, string) { mu.Lock(); fails++; mu.Unlock(); return 500, "" },
		"/drop": func() (int, string) { return 200, `{"status":"DROP"}` },
	})
	subs := []config.Subscription{
		{Name: "a", PubSub: "pubsub", Topic: "orders", Route: "/fail", DeadLetterTopic: "dead", Metadata: map[string]string{"maxRetries": "2"}},
		{Name: "b", PubSub: "pubsub", Topic: "drops", Route: "/drop", DeadLetterTopic: "dead"},
		{Name: "c", PubSub: "pubsub", Topic: "dead", Route: "/dead"},
		{Name: "other-app", PubSub: "pubsub", Topic: "orders", Route: "/never", Scopes: []string{"billing"}},
	}
	sc, base := startSidecar(t, a, subs[:3])
	publish(t, base, "orders", "application/json", `{"id":1}`)
	waitFor(t, func() bool { return len(a.got("/dead")) == 1 }, "dead letter")
	mu.Lock()
	if fails != 3 {
		t.Errorf("%d attempts before dead-lettering, want 3", fails)
	}
	mu.Unlock()
	if d := a.got("/dead")[0]; d["topic"] != "orders" {
		t.Errorf("dead letter carries %v", d)
	}
	publish(t, base, "drops", "text/plain", "x")
	waitFor(t, func() bool { return len(a.got("/dead")) == 2 }, "dropped message in the dead-letter topic")
	if len(a.got("/never")) != 0 || len(sc.rt.Metadata().Subscriptions) != 3 {
		t.Errorf("a subscription scoped to another app was used")
	}
}

// TestCloseWaitsForInFlight: Close returns only after the delivery running
// in the app finished.
func TestCloseWaitsForInFlight(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	a := startApp(t, "", map[string]func() (int, string){
		"/slow": func() (int, string) { entered <- struct{}{}; <-release; return 200, "" },
	})
	sc, base := startSidecar(t, a, []config.Subscription{{PubSub: "pubsub", Topic: "slow", Route: "/slow"}})
	publish(t, base, "slow", "text/plain", "x")
	<-entered
	closed := make(chan struct{})
	go func() { _ = sc.mgr.Close(context.Background()); close(closed) }()
	select {
	case <-closed:
		t.Fatal("closed with a delivery in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("close did not return after the delivery ended")
	}
}

func TestParseAppSubscriptions(t *testing.T) {
	got, err := subscription.ParseAppSubscriptions([]byte(`[
		{"pubsubname":"p","topic":"a","route":"/a","metadata":{"rawPayload":"true"},"deadLetterTopic":"dl"},
		{"pubsubname":"p","topic":"b","routes":{"rules":[{"match":"event.type == 'x'","path":"/x"}],"default":"/b"}}]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Route != "/a" || got[0].DeadLetterTopic != "dl" || got[0].Metadata["rawPayload"] != "true" ||
		got[1].Route != "/b" || len(got[1].Rules) != 1 || got[1].Rules[0].Path != "/x" {
		t.Fatalf("%+v", got)
	}
	if _, err := subscription.ParseAppSubscriptions([]byte(`{}`)); err == nil {
		t.Error("an object was accepted")
	}
}

var _ = pubsub.ErrDrop
