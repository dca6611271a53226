// Package redis is the Redis Streams broker (component type pubsub.redis),
// compatible with daprd's: a topic is a stream, a message is an entry with
// the fields "data" (the CloudEvent or raw payload) and "metadata" (the
// publish metadata as a JSON object), and a subscription group is a
// consumer group. daprd and switchyard sidecars can publish to and consume
// from the same streams and groups.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/internal/meta"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

// Type is the component type this broker registers.
const Type = "pubsub.redis"

// Defaults, as daprd's component has them.
const (
	DefaultProcessingTimeout = 60 * time.Second
	DefaultRedeliverInterval = 15 * time.Second
	DefaultQueueDepth        = 100
	DefaultConcurrency       = 10
	DefaultReadTimeout       = 3 * time.Second
	DefaultDialTimeout       = 5 * time.Second
)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("pubsub/redis: broker is closed")

func init() { pubsub.Register(Factory{}) }

// Factory builds Redis Streams brokers.
type Factory struct{}

var (
	_ pubsub.Factory           = Factory{}
	_ pubsub.MetadataValidator = Factory{}
	_ pubsub.Broker            = (*Broker)(nil)
)

// Type returns pubsub.redis.
func (Factory) Type() string { return Type }

// ValidateMetadata checks the component metadata without any I/O.
func (Factory) ValidateMetadata(md map[string]string) error {
	_, err := ParseConfig(md)
	return err
}

// Config is the broker's parsed metadata.
type Config struct {
	Host              string        // redisHost: host:port
	Username          string        // redisUsername
	Password          string        // redisPassword
	DB                int           // redisDB
	ConsumerID        string        // consumerID: the consumer group; empty: the subscription's group (app id)
	MaxLenApprox      int64         // maxLenApprox: XADD MAXLEN ~; 0: unbounded
	ProcessingTimeout time.Duration // processingTimeout: pending entries idle this long are reclaimed; 0 disables redelivery
	RedeliverInterval time.Duration // redeliverInterval: how often to look for them; 0 disables redelivery
	QueueDepth        int           // queueDepth: entries read per XREADGROUP and buffered locally
	Concurrency       int           // concurrency: delivery workers per subscription
	ReadTimeout       time.Duration // readTimeout: socket read timeout and XREADGROUP BLOCK
	DialTimeout       time.Duration // dialTimeout
}

// ParseConfig reads and checks the component metadata (no I/O).
func ParseConfig(md map[string]string) (Config, error) {
	r := meta.New("pubsub/redis", md)
	cfg := Config{
		Host:              r.Required("redisHost"),
		Username:          r.String("redisUsername", ""),
		Password:          r.String("redisPassword", ""),
		DB:                r.Int("redisDB", 0, 0),
		ConsumerID:        r.String("consumerID", ""),
		MaxLenApprox:      int64(r.Int("maxLenApprox", 0, 0)),
		ProcessingTimeout: r.Duration("processingTimeout", DefaultProcessingTimeout),
		RedeliverInterval: r.Duration("redeliverInterval", DefaultRedeliverInterval),
		QueueDepth:        r.Int("queueDepth", DefaultQueueDepth, 1),
		Concurrency:       r.Int("concurrency", DefaultConcurrency, 1),
		ReadTimeout:       r.Duration("readTimeout", DefaultReadTimeout),
		DialTimeout:       r.Duration("dialTimeout", DefaultDialTimeout),
	}
	if cfg.Host != "" {
		if strings.Contains(cfg.Host, ",") {
			r.Fail("redisHost", "%q: several hosts (cluster, sentinel) are not supported", cfg.Host)
		} else if _, _, err := net.SplitHostPort(cfg.Host); err != nil {
			cfg.Host = net.JoinHostPort(cfg.Host, "6379")
		}
	}
	if r.Bool("enableTLS", false) {
		r.Fail("enableTLS", "TLS is not supported yet")
	}
	if t := r.String("redisType", "node"); !strings.EqualFold(t, "node") {
		r.Fail("redisType", "%q is not supported (only node)", t)
	}
	if r.Bool("failover", false) {
		r.Fail("failover", "sentinel failover is not supported")
	}
	if cfg.ReadTimeout == 0 {
		r.Fail("readTimeout", "must be more than 0")
	}
	return cfg, r.Err()
}

// New connects to Redis (PING) and returns the broker.
func (Factory) New(ctx context.Context, opts pubsub.Options) (pubsub.Broker, error) {
	cfg, err := ParseConfig(opts.Metadata)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	client := goredis.NewClient(&goredis.Options{
		Addr:         cfg.Host,
		Username:     cfg.Username,
		Password:     cfg.Password,
		DB:           cfg.DB,
		DialTimeout:  cfg.DialTimeout,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.ReadTimeout,
		PoolSize:     4 * cfg.Concurrency,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 5 * time.Minute}
			return rawio.Wrapped(d.DialContext(ctx, network, addr))
		},
	})
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, fmt.Errorf("pubsub/redis: connect to %s: %w", cfg.Host, err)
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	return &Broker{
		cfg:    cfg,
		client: client,
		appID:  opts.AppID,
		id:     hex.EncodeToString(id[:]),
		log:    log.With(zap.String("scope", "pubsub.redis"), zap.String("component", opts.Name)),
		subs:   map[*subscription]struct{}{},
		pub:    newBatcher(client),
	}, nil
}

// Broker is a Redis Streams broker.
type Broker struct {
	cfg    Config
	client *goredis.Client
	appID  string
	id     string // this broker's part of consumer names
	log    *zap.Logger

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	seq    int
	closed bool
	pub    *batcher
}

// Client returns the underlying go-redis client (for tests and tools).
func (b *Broker) Client() *goredis.Client { return b.client }

// Publish appends the message to the topic's stream (XADD, trimmed to
// about maxLenApprox) and returns once Redis replied. msg.ID is set to the
// entry id.
func (b *Broker) Publish(ctx context.Context, topic string, msg *pubsub.Message) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	values := make([]any, 0, 4)
	values = append(values, "data", msg.Data)
	if msg.Metadata != nil {
		md, err := json.Marshal(msg.Metadata)
		if err != nil {
			return fmt.Errorf("pubsub/redis: publish to %q: metadata: %w", topic, err)
		}
		values = append(values, "metadata", md)
	}
	args := goredis.XAddArgs{Stream: topic, Values: values}
	if b.cfg.MaxLenApprox > 0 {
		args.MaxLen, args.Approx = b.cfg.MaxLenApprox, true
	}
	id, err := b.pub.do(ctx, args)
	if err != nil {
		return fmt.Errorf("pubsub/redis: publish to %q: %w", topic, err)
	}
	msg.ID = id
	return nil
}

// Close stops every subscription (waiting for deliveries in flight) and
// closes the connection pool.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.stop()
	}
	b.pub.close()
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("pubsub/redis: close: %w", err)
	}
	return nil
}
