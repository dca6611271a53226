// Command sdksub is a subscriber built with the Dapr Go SDK's HTTP service
// (github.com/dapr/go-sdk/service/http), used by switchyard's pub/sub
// end-to-end tests. It subscribes to -topics on -pubsub (programmatic
// subscriptions, answered on GET /dapr/subscribe by the SDK), records the
// payload of every event, and serves GET /stats with the number of events
// received and of distinct payloads.
//
// It prints "listening on <addr>" once it accepts connections.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dapr/go-sdk/service/common"
	daprd "github.com/dapr/go-sdk/service/http"
)

type stats struct {
	mu       sync.Mutex
	total    int
	distinct map[string]struct{}
	latency  []float64 // ms between the event's "sent" field (unix ns) and receipt
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	pubsubName := flag.String("pubsub", "pubsub", "pub/sub component")
	topics := flag.String("topics", "orders", "comma-separated topics")
	flag.Parse()

	// Bind first so that the port is known and accepting before the SDK
	// serves; the SDK then listens on the same address.
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bound := ln.Addr().String()
	_ = ln.Close()

	st := &stats{distinct: map[string]struct{}{}}
	s := daprd.NewService(bound)
	for _, t := range strings.Split(*topics, ",") {
		sub := &common.Subscription{PubsubName: *pubsubName, Topic: t, Route: "/events/" + t}
		if err := s.AddTopicEventHandler(sub, st.handle); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := s.AddServiceInvocationHandler("/stats", st.report); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := net.Dial("tcp", bound)
			if err == nil {
				c.Close()
				fmt.Printf("listening on %s\n", bound)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := s.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func (st *stats) handle(_ context.Context, e *common.TopicEvent) (bool, error) {
	now := time.Now().UnixNano()
	key := string(e.RawData)
	var p struct {
		Sent int64 `json:"sent"`
	}
	_ = json.Unmarshal(e.RawData, &p)
	st.mu.Lock()
	st.total++
	st.distinct[key] = struct{}{}
	if p.Sent > 0 {
		st.latency = append(st.latency, float64(now-p.Sent)/1e6)
	}
	st.mu.Unlock()
	return false, nil
}

func (st *stats) report(_ context.Context, _ *common.InvocationEvent) (*common.Content, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"total": st.total, "distinct": len(st.distinct), "latency_ms": st.latency})
	return &common.Content{Data: b, ContentType: "application/json"}, nil
}
