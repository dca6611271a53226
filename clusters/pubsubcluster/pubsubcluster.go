// Package pubsubcluster turns a Dapr pub/sub component into a cluster: it
// builds the component's broker (clusters/pubsub registry) and serves the
// publish exchanges that end in it (HTTP /v1.0/publish, bulk publish, gRPC
// PublishEvent): CloudEvents envelope as daprd builds it, topic scopes,
// publish, and 204 only once the broker took the message. The subscription
// listener reaches the same broker through Broker().
package pubsubcluster

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/cloudevents"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// Category is the component category this package builds ("pubsub.*" types).
const Category = "pubsub"

func init() { clusters.RegisterComponents(builder{}) }

type builder struct{}

var _ clusters.ComponentBuilder = builder{}

func (builder) Category() string { return Category }

// Build builds the broker of comp (its metadata validated first when the
// broker type can) and the cluster around it.
func (builder) Build(ctx context.Context, comp config.Component, env clusters.Env) (clusters.Cluster, error) {
	f, ok := pubsub.Get(comp.Type)
	if !ok {
		return nil, fmt.Errorf("pubsubcluster: %s: type %s is not available in this build (have %v)", comp.Name, comp.Type, pubsub.Types())
	}
	if v, ok := f.(pubsub.MetadataValidator); ok {
		if err := v.ValidateMetadata(comp.Metadata); err != nil {
			return nil, fmt.Errorf("pubsubcluster: %s: %w", comp.Name, err)
		}
	}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("component", comp.Name))
	b, err := f.New(ctx, pubsub.Options{Name: comp.Name, Metadata: comp.Metadata, AppID: env.AppID, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("pubsubcluster: %s: %w", comp.Name, err)
	}
	return New(b, Options{Name: comp.Name, Type: comp.Type, AppID: env.AppID, Namespace: env.Namespace,
		Metadata: comp.Metadata, Stats: env.Stats, Logger: log}), nil
}

// Options configure a Cluster.
type Options struct {
	Name      string // component name
	Type      string // component type, pubsub.redis ...
	AppID     string // our app id: the CloudEvent source, and the scopes' key
	Namespace string
	Metadata  map[string]string // component metadata (scopes are read from it)
	Stats     *stats.Registry   // nil: no metrics
	Logger    *zap.Logger
	// PublishTimeout bounds a publish when the request has no deadline
	// (0: 60s).
	PublishTimeout time.Duration
}

// Cluster is the cluster of one pub/sub component.
type Cluster struct {
	opts   Options
	broker pubsub.Broker
	scopes scopes
	log    *zap.Logger

	egress  *stats.CounterVec
	egressL *stats.HistogramVec
	topics  atomic.Pointer[map[string]*topicStats]
	statsMu sync.Mutex
}

type topicStats struct {
	ok, fail *stats.Counter
	latency  *stats.Histogram
}

var (
	_ clusters.Cluster      = (*Cluster)(nil)
	_ clusters.Capabilities = (*Cluster)(nil)
)

// New wraps a broker. The Cluster owns it: Close closes it.
func New(b pubsub.Broker, opts Options) *Cluster {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 60 * time.Second
	}
	c := &Cluster{opts: opts, broker: b, scopes: parseScopes(opts.Metadata, opts.AppID), log: opts.Logger}
	if opts.Stats != nil {
		cv := opts.Stats.Counter("component_pubsub_egress_count", "The number of outgoing messages published to the pub/sub component.",
			"app_id", "component", "namespace", "success", "topic")
		hv := opts.Stats.Histogram("component_pubsub_egress_latencies", "The latency of the response from the pub/sub component.",
			stats.LatencyBucketsMS, "app_id", "component", "namespace", "success", "topic")
		c.egress, c.egressL = &cv, &hv
	}
	empty := map[string]*topicStats{}
	c.topics.Store(&empty)
	return c
}

// Broker returns the component's broker, for subscription listeners.
func (c *Cluster) Broker() pubsub.Broker { return c.broker }

// Name returns the component name.
func (c *Cluster) Name() string { return c.opts.Name }

// PublishAllowed reports whether the component's scopes (allowedTopics,
// protectedTopics, publishingScopes) let this app publish to topic.
func (c *Cluster) PublishAllowed(topic string) bool {
	return c.scopes.allowedFor(topic, c.scopes.publish)
}

// SubscribeAllowed reports whether the component's scopes (allowedTopics,
// protectedTopics, subscriptionScopes) let this app subscribe to topic.
func (c *Cluster) SubscribeAllowed(topic string) bool {
	return c.scopes.allowedFor(topic, c.scopes.subscribe)
}

// Capabilities lists the component's features for the metadata API: those
// the broker reports, if it reports any.
func (c *Cluster) Capabilities() []string {
	if cp, ok := c.broker.(clusters.Capabilities); ok {
		return cp.Capabilities()
	}
	return nil
}

// Close closes the broker (its subscriptions stop).
func (c *Cluster) Close() error { return c.broker.Close() }

// Error values the cluster answers with.
func errForbidden(pubsubName, topic, appID string) error {
	return filters.NewError(filters.ErrCodePubSubForbidden, http.StatusForbidden, codes.PermissionDenied,
		"topic %s is not allowed for app id %s on pubsub %s", topic, appID, pubsubName)
}

// Handle serves a publish exchange: single or bulk.
func (c *Cluster) Handle(ctx context.Context, ex *filters.Exchange) error {
	if ex.Kind != filters.KindPublish {
		return filters.NewError(filters.ErrCodeNotImplemented, http.StatusNotImplemented, codes.Unimplemented,
			"pubsubcluster: %s: only publish requests end in a pub/sub component (got %s)", c.opts.Name, ex.Kind)
	}
	if !c.scopes.empty() && !c.PublishAllowed(string(ex.Topic)) {
		return errForbidden(c.opts.Name, string(ex.Topic), c.opts.AppID)
	}
	if _, ok := ctx.Deadline(); !ok {
		// Without a deadline the request's context is the listener's
		// (fasthttp's RequestCtx ends only at server shutdown, and deriving
		// from it races with that shutdown): bound the publish on its own.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), c.opts.PublishTimeout)
		defer cancel()
	}
	if ex.Bulk {
		return c.bulk(ctx, ex)
	}
	return c.publish(ctx, ex)
}

const metadataPrefix = "metadata."

// requestMetadata returns the metadata.* query arguments, nil when none.
func requestMetadata(ex *filters.Exchange) map[string]string {
	args := ex.Req.URI().QueryArgs()
	if args.Len() == 0 {
		return nil
	}
	var md map[string]string
	for k, v := range args.All() {
		if len(k) > len(metadataPrefix) && bytes.HasPrefix(k, []byte(metadataPrefix)) {
			if md == nil {
				md = make(map[string]string, 2)
			}
			md[string(k[len(metadataPrefix):])] = string(v)
		}
	}
	return md
}

type pubBuf struct {
	b   []byte
	msg pubsub.Message
}

var bufPool = sync.Pool{New: func() any { return &pubBuf{b: make([]byte, 0, 1024)} }}

func (c *Cluster) envelope(dst []byte, ex *filters.Exchange, topic string, data []byte, ct string, md map[string]string) ([]byte, error) {
	opts := cloudevents.Options{
		Source: c.opts.AppID, Topic: topic, PubSub: c.opts.Name,
		DataContentType: ct, Data: data, Metadata: md,
	}
	if tp := ex.Req.Header.Peek("traceparent"); len(tp) > 0 {
		opts.TraceParent = string(tp)
	}
	if ts := ex.Req.Header.Peek("tracestate"); len(ts) > 0 {
		opts.TraceState = string(ts)
	}
	out, err := cloudevents.Append(dst, opts)
	if err != nil {
		return dst, filters.NewError(filters.ErrCodePubSubCloudEvents, http.StatusBadRequest, codes.InvalidArgument,
			"error when unmarshalling the request body as a cloud event for pubsub %s: %v", c.opts.Name, err)
	}
	return out, nil
}

func (c *Cluster) publish(ctx context.Context, ex *filters.Exchange) error {
	topic := string(ex.Topic)
	md := requestMetadata(ex)
	ct := string(ex.Req.Header.ContentType())
	raw := len(md) > 0 && cloudevents.IsRawPayload(md)

	pb := bufPool.Get().(*pubBuf)
	defer func() {
		pb.msg = pubsub.Message{}
		if cap(pb.b) <= 1<<20 {
			bufPool.Put(pb)
		}
	}()
	var err error
	pb.msg.ContentType = cloudevents.ContentType
	if raw {
		pb.msg.Data = ex.Req.Body()
		pb.msg.ContentType = ct
	} else {
		pb.b, err = c.envelope(pb.b[:0], ex, topic, ex.Req.Body(), ct, md)
		if err != nil {
			return err
		}
		pb.msg.Data = pb.b
	}
	pb.msg.Topic = topic
	pb.msg.Metadata = md
	if err := c.send(ctx, topic, &pb.msg); err != nil {
		return filters.NewError(filters.ErrCodePubSubPublish, http.StatusInternalServerError, codes.Internal,
			"error when publish to topic %s in pubsub %s: %v", topic, c.opts.Name, err)
	}
	ex.Resp.Reset()
	ex.Resp.SetStatusCode(http.StatusNoContent)
	return nil
}

// Publish publishes one message, counting it in the egress metrics. The
// subscription listener uses it for dead-letter topics.
func (c *Cluster) Publish(ctx context.Context, topic string, msg *pubsub.Message) error {
	return c.send(ctx, topic, msg)
}

func (c *Cluster) send(ctx context.Context, topic string, msg *pubsub.Message) error {
	start := time.Now()
	err := c.broker.Publish(ctx, topic, msg)
	if c.egress != nil {
		ts := c.topicStats(topic)
		if err == nil {
			ts.ok.Inc()
		} else {
			ts.fail.Inc()
		}
		ts.latency.ObserveSince(start)
	}
	return err
}

func (c *Cluster) topicStats(topic string) *topicStats {
	if ts, ok := (*c.topics.Load())[topic]; ok {
		return ts
	}
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	cur := *c.topics.Load()
	if ts, ok := cur[topic]; ok {
		return ts
	}
	o := c.opts
	ts := &topicStats{
		ok:      c.egress.With(o.AppID, o.Name, o.Namespace, "true", topic),
		fail:    c.egress.With(o.AppID, o.Name, o.Namespace, "false", topic),
		latency: c.egressL.With(o.AppID, o.Name, o.Namespace, "true", topic),
	}
	next := make(map[string]*topicStats, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[topic] = ts
	c.topics.Store(&next)
	return ts
}
