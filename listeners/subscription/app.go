package subscription

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/switchyard-proxy/switchyard/config"
)

// appSubscription is one entry of GET /dapr/subscribe: Dapr's v1 shape
// (route) or v2alpha1 (routes with rules and a default).
type appSubscription struct {
	PubSubName      string            `json:"pubsubname"`
	Topic           string            `json:"topic"`
	Route           string            `json:"route"`
	Routes          *appRoutes        `json:"routes"`
	Metadata        map[string]string `json:"metadata"`
	DeadLetterTopic string            `json:"deadLetterTopic"`
}

type appRoutes struct {
	Rules []struct {
		Match string `json:"match"`
		Path  string `json:"path"`
	} `json:"rules"`
	Default string `json:"default"`
}

// ParseAppSubscriptions reads the answer of GET /dapr/subscribe.
func ParseAppSubscriptions(body []byte) ([]config.Subscription, error) {
	var in []appSubscription
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("subscription: /dapr/subscribe: %w", err)
	}
	out := make([]config.Subscription, 0, len(in))
	for _, s := range in {
		cs := config.Subscription{PubSub: s.PubSubName, Topic: s.Topic, Route: s.Route, Metadata: s.Metadata, DeadLetterTopic: s.DeadLetterTopic}
		if s.Routes != nil {
			if s.Routes.Default != "" {
				cs.Route = s.Routes.Default
			}
			for _, r := range s.Routes.Rules {
				cs.Rules = append(cs.Rules, config.SubscriptionRule{Match: r.Match, Path: r.Path})
			}
		}
		out = append(out, cs)
	}
	return out, nil
}

// TopicLister is implemented by app clusters that can list the app's
// subscriptions themselves (a gRPC app's ListTopicSubscriptions).
type TopicLister interface {
	ListTopicSubscriptions(ctx context.Context) ([]config.Subscription, error)
}

// fetchHTTP asks an HTTP app for its subscriptions. A 404 (or any non-2xx)
// means none, as for daprd; connection errors are retried a few times.
func fetchHTTP(ctx context.Context, cfg *config.Config) ([]config.Subscription, error) {
	host := cfg.AppChannelAddress
	if host == "" {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.AppPort))
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	c := &fasthttp.HostClient{Addr: addr}
	defer c.CloseIdleConnections()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		req.Reset()
		resp.Reset()
		req.SetRequestURI("http://" + addr + "/dapr/subscribe")
		req.Header.SetMethod(fasthttp.MethodGet)
		if cfg.AppAPIToken != "" {
			req.Header.Set("dapr-api-token", cfg.AppAPIToken)
		}
		if err = c.DoTimeout(req, resp, 5*time.Second); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("subscription: GET /dapr/subscribe on %s: %w", addr, err)
	}
	if sc := resp.StatusCode(); sc < 200 || sc > 299 {
		return nil, nil
	}
	body := resp.Body()
	if len(body) == 0 {
		return nil, nil
	}
	return ParseAppSubscriptions(body)
}

// fetchGRPC asks a gRPC app for its subscriptions with
// AppCallback/ListTopicSubscriptions on a connection of its own.
// Unimplemented means none.
func fetchGRPC(ctx context.Context, cfg *config.Config) ([]config.Subscription, error) {
	host := cfg.AppChannelAddress
	if host == "" {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.AppPort))
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("subscription: ListTopicSubscriptions on %s: %w", addr, err)
	}
	defer cc.Close()
	if cfg.AppAPIToken != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "dapr-api-token", cfg.AppAPIToken)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := runtimev1pb.NewAppCallbackClient(cc).ListTopicSubscriptions(ctx, &emptypb.Empty{}, grpc.WaitForReady(true))
	if status.Code(err) == codes.Unimplemented {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("subscription: ListTopicSubscriptions on %s: %w", addr, err)
	}
	var out []config.Subscription
	for _, s := range resp.GetSubscriptions() {
		cs := config.Subscription{PubSub: s.GetPubsubName(), Topic: s.GetTopic(), Metadata: s.GetMetadata(), DeadLetterTopic: s.GetDeadLetterTopic()}
		if r := s.GetRoutes(); r != nil {
			cs.Route = r.GetDefault()
			for _, rule := range r.GetRules() {
				cs.Rules = append(cs.Rules, config.SubscriptionRule{Match: rule.GetMatch(), Path: rule.GetPath()})
			}
		}
		if cs.Route == "" && len(cs.Rules) == 0 {
			// gRPC apps get every event on OnTopicEvent; the path is informative.
			cs.Route = "/" + cs.Topic
		}
		out = append(out, cs)
	}
	return out, nil
}
