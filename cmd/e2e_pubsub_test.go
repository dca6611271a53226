package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub/pubsubtest"
)

var sdksubBin struct {
	once sync.Once
	path string
	err  error
}

// buildSDKSub compiles the Go SDK subscriber test app once.
func buildSDKSub(t *testing.T) string {
	t.Helper()
	build(t) // the switchyard binary and the temp dir
	sdksubBin.once.Do(func() {
		sdksubBin.path = filepath.Join(bins.dir, "sdksub")
		if b, err := exec.Command("go", "build", "-o", sdksubBin.path, "../internal/testapps/sdksub").CombinedOutput(); err != nil {
			sdksubBin.err = fmt.Errorf("go build sdksub: %v\n%s", err, b)
		}
	})
	if sdksubBin.err != nil {
		t.Fatal(sdksubBin.err)
	}
	return sdksubBin.path
}

// startSDKSub starts the SDK subscriber on a free port.
func startSDKSub(t *testing.T, topics string) int {
	t.Helper()
	bin := buildSDKSub(t)
	port := freePort(t)
	p := start(t, nil, bin, "-addr", "127.0.0.1:"+strconv.Itoa(port), "-topics", topics)
	waitFor(t, func() bool { return strings.Contains(p.Output(), "listening on") }, "sdksub to listen")
	return port
}

type subStats struct {
	Total    int       `json:"total"`
	Distinct int       `json:"distinct"`
	Latency  []float64 `json:"latency_ms"`
}

func readStats(t *testing.T, appPort int) subStats {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(appPort) + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s subStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func writeComponent(t *testing.T, typ string, md map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: %s\n  version: v1\n  metadata:\n", typ)
	for k, v := range md {
		fmt.Fprintf(&b, "    - name: %s\n      value: %q\n", k, v)
	}
	if err := os.WriteFile(filepath.Join(dir, "pubsub.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (s *sidecar) kill() {
	_ = s.Cmd.Process.Kill()
	<-s.Done
}

// publisher publishes numbered messages with the Dapr Go SDK over the
// sidecar's gRPC API and remembers which ones were acknowledged.
type publisher struct {
	c     dapr.Client
	acked map[int]bool
}

func newPublisher(t *testing.T, s *sidecar) *publisher {
	t.Helper()
	c, err := dapr.NewClientWithAddress("127.0.0.1:" + strconv.Itoa(s.grpc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &publisher{c: c, acked: map[int]bool{}}
}

// publish sends messages [from, to); a refused publish is retried for a
// while (the broker may be restarting), and only acknowledged ones count.
func (p *publisher) publish(t *testing.T, topic string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		deadline := time.Now().Add(30 * time.Second)
		for {
			data := fmt.Sprintf(`{"n":%d,"sent":%d}`, i, time.Now().UnixNano())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := p.c.PublishEvent(ctx, "pubsub", topic, []byte(data), dapr.PublishEventWithContentType("application/json"))
			cancel()
			if err == nil {
				p.acked[i] = true
				break
			}
			if time.Now().After(deadline) {
				t.Logf("message %d not acknowledged: %v", i, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestPubSubAtLeastOnce: a publisher sidecar and a subscriber sidecar share
// one broker; the Go SDK publishes over gRPC and an SDK app subscribes.
// Every acknowledged message reaches the app at least once across a
// restart (SIGKILL) of the subscriber's sidecar and a restart of the broker.
func TestPubSubAtLeastOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts brokers")
	}
	const n = 200
	brokers := []struct {
		name  string
		start func(t *testing.T) (typ string, md map[string]string, restart func())
	}{
		{"redis", func(t *testing.T) (string, map[string]string, func()) {
			addr, restart, _ := pubsubtest.StartRedis(t)
			return "pubsub.redis", map[string]string{"redisHost": addr, "processingTimeout": "2s", "redeliverInterval": "500ms", "readTimeout": "1s"}, restart
		}},
		{"nats", func(t *testing.T) (string, map[string]string, func()) {
			url, restart, _ := pubsubtest.StartNATS(t)
			return "pubsub.jetstream", map[string]string{"natsURL": url, "ackWait": "3s", "reconnectWait": "200ms"}, restart
		}},
	}
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			typ, md, restartBroker := bk.start(t)
			res := writeComponent(t, typ, md)
			appPort := startSDKSub(t, "orders")
			sub := startSidecar(t, nil, "sub", appPort, "--resources-path", res)
			waitReady(t, sub)
			pubSC := startSidecar(t, nil, "pub", 0, "--resources-path", res)
			waitReady(t, pubSC)
			waitFor(t, func() bool {
				_, b := do(t, "GET", sub.url("/v1.0/metadata"), nil)
				return strings.Contains(string(b), `"topic":"orders"`)
			}, "the subscription to be active")
			p := newPublisher(t, pubSC)

			p.publish(t, "orders", 0, n/4)

			// The subscriber's sidecar dies (no graceful stop) and comes back.
			sub.Kill()
			p.publish(t, "orders", n/4, n/2)
			sub = startSidecar(t, nil, "sub", appPort, "--resources-path", res)
			waitReady(t, sub)

			// The broker restarts (AOF / JetStream file storage).
			restartBroker()
			p.publish(t, "orders", n/2, 3*n/4)
			p.publish(t, "orders", 3*n/4, n)

			if len(p.acked) < n*9/10 {
				t.Fatalf("only %d of %d publishes were acknowledged", len(p.acked), n)
			}
			deadline := time.Now().Add(60 * time.Second)
			var st subStats
			for {
				st = readStats(t, appPort)
				if st.Distinct >= len(p.acked) || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s: %d acknowledged, %d distinct received, %d deliveries", bk.name, len(p.acked), st.Distinct, st.Total)
			if st.Distinct < len(p.acked) {
				t.Fatalf("%d acknowledged messages never reached the app", len(p.acked)-st.Distinct)
			}
		})
	}
}

// TestPubSubHTTPPublishAndDrop: publish over HTTP (default in-memory
// component), the httpapp answers 404 on its route -> dropped with a
// warning and the drop metric; another route acks.
func TestPubSubHTTPPublishAndDrop(t *testing.T) {
	appPort, app := startApp(t, "-subscribe", `[{"pubsubname":"pubsub","topic":"ok","route":"/events/ok"},{"pubsubname":"pubsub","topic":"gone","route":"/status/404"}]`)
	_ = app
	sc := startSidecar(t, nil, "orders", appPort)
	waitReady(t, sc)
	waitFor(t, func() bool {
		_, b := do(t, "GET", sc.url("/v1.0/metadata"), nil)
		return strings.Contains(string(b), `"topic":"gone"`)
	}, "subscriptions")
	for _, topic := range []string{"ok", "gone"} {
		resp, b := do(t, "POST", sc.url("/v1.0/publish/pubsub/"+topic), strings.NewReader(`{"x":1}`), "Content-Type", "application/json")
		if resp.StatusCode != 204 {
			t.Fatalf("publish %s: %d %s", topic, resp.StatusCode, b)
		}
	}
	resp, b := do(t, "POST", sc.url("/v1.0/publish/nope/ok"), strings.NewReader(`x`))
	if resp.StatusCode != 404 || !strings.Contains(string(b), "ERR_PUBSUB_NOT_FOUND") {
		t.Fatalf("unknown pubsub: %d %s", resp.StatusCode, b)
	}
	waitFor(t, func() bool {
		_, b := do(t, "GET", "http://127.0.0.1:"+strconv.Itoa(appPort)+"/received", nil)
		return strings.Contains(string(b), `"topic":"ok"`)
	}, "delivery to /events/ok")
	waitFor(t, func() bool {
		_, b := do(t, "GET", "http://127.0.0.1:"+strconv.Itoa(sc.metrics)+"/metrics", nil)
		return strings.Contains(string(b), `process_status="drop",topic="gone"} 1`)
	}, "the drop metric")
	waitFor(t, func() bool { return len(logLines(sc.Output(), "dropped a pub/sub event")) > 0 }, "a warning for the dropped event")
}
