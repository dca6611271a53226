package listeners_test

import (
	"context"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/memory"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsubcluster"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/listeners"
)

func TestListen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	t.Run("no addresses", func(t *testing.T) {
		if _, err := listeners.Listen(zap.NewNop(), "l", nil); err == nil || !strings.Contains(err.Error(), "listener l: no addresses") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("none can be bound", func(t *testing.T) {
		_, err := listeners.Listen(zap.NewNop(), "l", []string{busy.Addr().String(), "not-an-address"})
		if err == nil || !strings.Contains(err.Error(), "listener l: could not bind any address") ||
			!strings.Contains(err.Error(), busy.Addr().String()) || !strings.Contains(err.Error(), "not-an-address") {
			t.Fatalf("err %v, want both failures listed", err)
		}
	})
	t.Run("one bad address is skipped with a warning", func(t *testing.T) {
		core, logs := observer.New(zapcore.WarnLevel)
		lns, err := listeners.Listen(zap.New(core), "l", []string{busy.Addr().String(), "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer lns[0].Close()
		if len(lns) != 1 {
			t.Fatalf("%d listeners, want 1", len(lns))
		}
		addrs := listeners.AddrsOf(lns)
		if len(addrs) != 1 || addrs[0].String() != lns[0].Addr().String() || addrs[0].(*net.TCPAddr).Port == 0 {
			t.Fatalf("AddrsOf %v", addrs)
		}
		c, err := net.Dial("tcp", addrs[0].String())
		if err != nil {
			t.Fatalf("the bound address does not accept: %v", err)
		}
		c.Close()
		ws := logs.FilterField(zap.String("listener", "l")).All()
		if len(ws) != 1 || !strings.Contains(ws[0].ContextMap()["error"].(string), busy.Addr().String()) {
			t.Fatalf("warnings %v", logs.All())
		}
	})
}

func TestHealth(t *testing.T) {
	var h listeners.Health
	if h.Ready() || h.OutboundReady() {
		t.Fatal("ready before anything was set")
	}
	ready := h.AppReady()
	h.SetOutboundReady(true)
	if h.Ready() || !h.OutboundReady() {
		t.Fatal("ready without the app")
	}
	select {
	case <-ready:
		t.Fatal("AppReady closed before the app was ready")
	default:
	}
	h.SetAppReady(false)
	h.SetAppReady(true)
	if !h.Ready() {
		t.Fatal("not ready with the app and the listeners up")
	}
	select {
	case <-ready:
	default:
		t.Fatal("AppReady not closed once the app is ready")
	}
	if h.AppReady() != ready {
		t.Fatal("AppReady changed channels")
	}
	h.SetOutboundReady(false)
	if h.Ready() || h.OutboundReady() {
		t.Fatal("ready while shutting down")
	}
	h.SetOutboundReady(true)

	// The app may go away and come back: readiness follows, and AppReady
	// stays closed (it must not be closed twice).
	h.SetAppReady(false)
	if h.Ready() {
		t.Fatal("ready while the app is down")
	}
	h.SetAppReady(true)
	h.SetAppReady(true)
	if !h.Ready() {
		t.Fatal("not ready after the app came back")
	}
	select {
	case <-h.AppReady():
	default:
		t.Fatal("AppReady reopened")
	}
}

func TestHealthConcurrent(t *testing.T) {
	var h listeners.Health
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-h.AppReady()
		}()
	}
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.SetAppReady(i%3 != 0)
			h.SetAppReady(true)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("waiters on AppReady were not released")
	}
	// Every goroutine's last call was true, so the app is up.
	h.SetOutboundReady(true)
	if !h.Ready() {
		t.Fatal("not ready after the last SetAppReady(true)")
	}
}

func TestChainRef(t *testing.T) {
	var ref listeners.ChainRef
	if ref.Load() != nil {
		t.Fatal("empty ref holds a chain")
	}
	c1, c2 := &filters.Chain{}, &filters.Chain{}
	ref.Store(c1)
	if ref.Load() != c1 {
		t.Fatal("Load after Store")
	}
	ref.Store(c2)
	if ref.Load() != c2 {
		t.Fatal("Load after the second Store")
	}
}

// TestMetadata: the metadata API's answer, in daprd's JSON shape.
func TestMetadata(t *testing.T) {
	rt := newRuntime()
	rt.Version = "1.2.3"
	empty := rt.Metadata()
	b, _ := json.Marshal(empty)
	for _, want := range []string{`"enabledFeatures":[]`, `"components":[]`, `"subscriptions":[]`, `"httpEndpoints":[]`, `"extended":{"daprRuntimeVersion":"1.2.3"}`, `"runtimeVersion":"1.2.3"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("metadata without a snapshot lacks %s: %s", want, b)
		}
	}
	if strings.Contains(string(b), `"actors"`) {
		t.Fatalf("actors must be left out: %s", b)
	}

	m := listeners.NewManager(rt, 10*time.Millisecond)
	defer m.Close(context.Background())
	apply(t, m, config.NewSnapshot(&config.Config{
		AppID: "orders", AppPort: 3000, AppProtocol: "http", AppChannelAddress: "127.0.0.1", AppMaxConcurrency: -1,
		Components: []config.Component{{Name: "messages", Type: "pubsub.in-memory", Version: "v1"}},
	}, "test"))
	rt.SetExtended("team", "payments")
	rt.SetSubscriptionLister(func() []listeners.MetadataSubscription {
		return []listeners.MetadataSubscription{{PubSubName: "messages", Topic: "orders", Rules: []listeners.MetadataRule{{Path: "/orders"}}}}
	})
	md := rt.Metadata()
	if md.ID != "orders" || md.RuntimeVersion != "1.2.3" {
		t.Fatalf("id %q version %q", md.ID, md.RuntimeVersion)
	}
	want := listeners.AppConnectionProperties{Port: 3000, Protocol: "http", ChannelAddress: "127.0.0.1", MaxConcurrency: 0}
	if md.AppConnectionProperties != want {
		t.Fatalf("app connection %+v, want %+v", md.AppConnectionProperties, want)
	}
	if len(md.Components) != 1 || md.Components[0].Name != "messages" || md.Components[0].Type != "pubsub.in-memory" || md.Components[0].Version != "v1" {
		t.Fatalf("components %+v", md.Components)
	}
	if !reflect.DeepEqual(md.Extended, map[string]string{"team": "payments", "daprRuntimeVersion": "1.2.3"}) {
		t.Fatalf("extended %v", md.Extended)
	}
	if len(md.Subscriptions) != 1 || md.Subscriptions[0].Topic != "orders" || md.Subscriptions[0].Rules[0].Path != "/orders" {
		t.Fatalf("subscriptions %+v", md.Subscriptions)
	}
	b, _ = json.Marshal(md)
	for _, want := range []string{`"id":"orders"`, `"appConnectionProperties":{"port":3000,"protocol":"http","channelAddress":"127.0.0.1"}`, `"pubsubname":"messages"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("JSON lacks %s: %s", want, b)
		}
	}
}
