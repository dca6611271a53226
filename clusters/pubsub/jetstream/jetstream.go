// Package jetstream is the NATS JetStream broker (component type
// pubsub.jetstream). A topic is a subject; messages are kept in a stream
// (found by subject, or created with file storage when there is none) and
// delivered through a durable pull consumer per subscription group, acked
// only once the app took them.
package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/internal/meta"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

// Type is the component type this broker registers.
const Type = "pubsub.jetstream"

// Defaults.
const (
	DefaultAckWait       = 30 * time.Second
	DefaultNakDelay      = time.Second
	DefaultConcurrency   = 10
	DefaultReconnectWait = 2 * time.Second
	DefaultDialTimeout   = 5 * time.Second
)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("pubsub/jetstream: broker is closed")

func init() { pubsub.Register(Factory{}) }

// Factory builds JetStream brokers.
type Factory struct{}

var (
	_ pubsub.Factory           = Factory{}
	_ pubsub.MetadataValidator = Factory{}
	_ pubsub.Broker            = (*Broker)(nil)
)

// Type returns pubsub.jetstream.
func (Factory) Type() string { return Type }

// ValidateMetadata checks the component metadata without any I/O.
func (Factory) ValidateMetadata(md map[string]string) error {
	_, err := ParseConfig(md)
	return err
}

// Config is the broker's parsed metadata.
type Config struct {
	NatsURL       string                  // natsURL
	Name          string                  // name: the NATS connection name
	Token         string                  // token
	StreamName    string                  // streamName: one stream for every topic; empty: the stream bound to the subject, or one created per topic
	DurableName   string                  // durableName: consumer name; empty: the subscription group (app id)
	AckWait       time.Duration           // ackWait
	MaxDeliver    int                     // maxDeliver: -1 unlimited
	DeliverPolicy jetstream.DeliverPolicy // deliverPolicy: all | last | new
	NakDelay      time.Duration           // nakDelay: redelivery delay after a failed delivery
	Concurrency   int                     // concurrency: delivery workers per subscription
	ReconnectWait time.Duration           // reconnectWait
	DialTimeout   time.Duration           // dialTimeout
}

// ParseConfig reads and checks the component metadata (no I/O).
func ParseConfig(md map[string]string) (Config, error) {
	r := meta.New("pubsub/jetstream", md)
	cfg := Config{
		NatsURL:       r.Required("natsURL"),
		Name:          r.String("name", "switchyard"),
		Token:         r.String("token", ""),
		StreamName:    r.String("streamName", ""),
		DurableName:   r.String("durableName", ""),
		AckWait:       r.Duration("ackWait", DefaultAckWait),
		MaxDeliver:    r.Int("maxDeliver", -1, -1),
		NakDelay:      r.Duration("nakDelay", DefaultNakDelay),
		Concurrency:   r.Int("concurrency", DefaultConcurrency, 1),
		ReconnectWait: r.Duration("reconnectWait", DefaultReconnectWait),
		DialTimeout:   r.Duration("dialTimeout", DefaultDialTimeout),
	}
	switch r.OneOf("deliverPolicy", "all", "all", "last", "new") {
	case "last":
		cfg.DeliverPolicy = jetstream.DeliverLastPolicy
	case "new":
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	if cfg.MaxDeliver == 0 {
		r.Fail("maxDeliver", "must be -1 (unlimited) or more than 0")
	}
	if cfg.AckWait == 0 {
		r.Fail("ackWait", "must be more than 0")
	}
	if cfg.StreamName != "" && !validName(cfg.StreamName) {
		r.Fail("streamName", "%q may not contain spaces, '.', '*', '>', '/' or '\\'", cfg.StreamName)
	}
	if cfg.DurableName != "" && !validName(cfg.DurableName) {
		r.Fail("durableName", "%q may not contain spaces, '.', '*', '>', '/' or '\\'", cfg.DurableName)
	}
	if t := r.String("concurrencyMode", ""); t != "" {
		r.Fail("concurrencyMode", "is not supported: use concurrency (1 for one at a time)")
	}
	return cfg, r.Err()
}

func validName(s string) bool { return !strings.ContainsAny(s, " \t\r\n.*>/\\") }

// New connects to NATS and returns the broker.
func (Factory) New(ctx context.Context, opts pubsub.Options) (pubsub.Broker, error) {
	cfg, err := ParseConfig(opts.Metadata)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("scope", "pubsub.jetstream"), zap.String("component", opts.Name))
	nopts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.Timeout(cfg.DialTimeout),
		nats.SetCustomDialer(rawDialer{timeout: cfg.DialTimeout}),
	}
	if cfg.Token != "" {
		nopts = append(nopts, nats.Token(cfg.Token))
	}
	nc, err := nats.Connect(cfg.NatsURL, nopts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub/jetstream: connect to %s: %w", cfg.NatsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("pubsub/jetstream: %w", err)
	}
	return &Broker{
		cfg: cfg, nc: nc, js: js, appID: opts.AppID, log: log,
		streams: map[string]string{},
		subs:    map[*subscription]struct{}{},
	}, nil
}

// Broker is a JetStream broker.
type Broker struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	appID string
	log   *zap.Logger

	mu      sync.Mutex
	streams map[string]string // topic -> stream
	subs    map[*subscription]struct{}
	closed  bool
}

// JetStream returns the underlying JetStream context (for tests and tools).
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

// Publish publishes to the topic's subject and waits for the stream's
// acknowledgement. The CloudEvent id, when Data is one, is the Nats-Msg-Id
// (JetStream drops duplicates within its window, as with daprd). ContentType
// and Metadata travel as headers. msg.ID is set to the stream sequence.
func (b *Broker) Publish(ctx context.Context, topic string, msg *pubsub.Message) error {
	stream, err := b.stream(ctx, topic)
	if err != nil {
		return err
	}
	nm := &nats.Msg{Subject: topic, Data: msg.Data}
	if msg.ContentType != "" || len(msg.Metadata) > 0 {
		nm.Header = make(nats.Header, len(msg.Metadata)+1)
		for k, v := range msg.Metadata {
			if k == "" || strings.ContainsAny(k, ": \r\n") || strings.ContainsAny(v, "\r\n") {
				return fmt.Errorf("pubsub/jetstream: publish to %q: metadata %q cannot be a NATS header", topic, k)
			}
			nm.Header[k] = []string{v}
		}
		if msg.ContentType != "" {
			nm.Header["Content-Type"] = []string{msg.ContentType}
		}
	}
	var popts []jetstream.PublishOpt
	if id := cloudEventID(msg.Data); id != "" {
		popts = append(popts, jetstream.WithMsgID(id))
	}
	ack, err := b.js.PublishMsg(ctx, nm, popts...)
	if err != nil {
		return fmt.Errorf("pubsub/jetstream: publish to %q (stream %s): %w", topic, stream, err)
	}
	msg.ID = strconv.FormatUint(ack.Sequence, 10)
	return nil
}

// cloudEventID returns the id of a CloudEvent, or "".
func cloudEventID(data []byte) string {
	if len(data) == 0 || data[0] != '{' {
		return ""
	}
	var ce struct {
		ID          string `json:"id"`
		SpecVersion string `json:"specversion"`
	}
	if json.Unmarshal(data, &ce) != nil || ce.SpecVersion == "" {
		return ""
	}
	return ce.ID
}

// stream returns the stream holding topic, creating or extending it when
// needed. Results are cached.
func (b *Broker) stream(ctx context.Context, topic string) (string, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return "", ErrClosed
	}
	name, ok := b.streams[topic]
	b.mu.Unlock()
	if ok {
		return name, nil
	}
	name, err := b.findOrCreateStream(ctx, topic)
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	b.streams[topic] = name
	b.mu.Unlock()
	return name, nil
}

func (b *Broker) findOrCreateStream(ctx context.Context, topic string) (string, error) {
	if b.cfg.StreamName != "" {
		s, err := b.js.Stream(ctx, b.cfg.StreamName)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = b.js.CreateStream(ctx, jetstream.StreamConfig{Name: b.cfg.StreamName, Subjects: []string{topic}, Storage: jetstream.FileStorage})
			if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return b.findOrCreateStream(ctx, topic)
			}
		}
		if err != nil {
			return "", fmt.Errorf("pubsub/jetstream: stream %s: %w", b.cfg.StreamName, err)
		}
		cfg := s.CachedInfo().Config
		if !slices.ContainsFunc(cfg.Subjects, func(p string) bool { return subjectMatches(p, topic) }) {
			cfg.Subjects = append(cfg.Subjects, topic)
			if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
				return "", fmt.Errorf("pubsub/jetstream: add subject %q to stream %s: %w", topic, b.cfg.StreamName, err)
			}
		}
		return b.cfg.StreamName, nil
	}
	name, err := b.js.StreamNameBySubject(ctx, topic)
	if err == nil {
		return name, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", fmt.Errorf("pubsub/jetstream: find the stream of %q: %w", topic, err)
	}
	name = streamNameFor(topic)
	_, err = b.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{topic}, Storage: jetstream.FileStorage})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return "", fmt.Errorf("pubsub/jetstream: create stream %s for %q: %w", name, topic, err)
	}
	return name, nil
}

// streamNameFor derives a valid stream name from a subject: characters a
// stream name may not have become '_', with a hash of the subject appended
// when anything was replaced (so that "a.b" and "a_b" differ).
func streamNameFor(topic string) string {
	if validName(topic) {
		return topic
	}
	n := strings.Map(func(r rune) rune {
		if strings.ContainsRune(" \t\r\n.*>/\\", r) {
			return '_'
		}
		return r
	}, topic)
	h := fnv.New32a()
	h.Write([]byte(topic))
	return fmt.Sprintf("%s_%08x", n, h.Sum32())
}

// subjectMatches reports whether a stream subject (with * and >
// wildcards) covers subject.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

// Close stops every subscription (waiting for deliveries in flight) and
// closes the connection.
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
	b.nc.Close()
	return nil
}

// rawDialer dials the server's TCP connections wrapped by rawio.
type rawDialer struct{ timeout time.Duration }

func (d rawDialer) Dial(network, address string) (net.Conn, error) {
	return rawio.Wrapped(net.DialTimeout(network, address, d.timeout))
}
