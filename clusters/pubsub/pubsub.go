// Package pubsub is the broker registry. A broker is the cluster behind
// publish routes and the source behind subscription listeners. Each broker
// kind lives in its own folder and registers a Factory from init().
package pubsub

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/internal/registry"
)

// Message is one message as the broker carries it: the CloudEvent (or raw
// payload) bytes and metadata.
type Message struct {
	// ID is the broker's id for the message, set on delivery.
	ID string
	// Topic the message was published to.
	Topic string
	// Data is what is stored in the broker: the serialized CloudEvent, or
	// the raw payload when rawPayload was asked for.
	Data []byte
	// ContentType of Data (application/cloudevents+json for CloudEvents).
	ContentType string
	// Metadata from the publisher (metadata.* query parameters, gRPC metadata).
	Metadata map[string]string
	// Attempt is the delivery attempt, 1 for the first (where the broker knows).
	Attempt int
}

// Broker publishes to and subscribes from one broker. Publish returns only
// once the broker has accepted (persisted, where it persists) the message.
// Subscribe calls deliver for every message; a nil error acknowledges it, an
// error asks for redelivery (ErrDrop drops it).
type Broker interface {
	Publish(ctx context.Context, topic string, msg *Message) error
	Subscribe(ctx context.Context, sub Subscription, deliver DeliverFunc) (stop func(), err error)
	Close() error
}

// DeliverFunc hands one message to the app. It returns nil on success.
type DeliverFunc func(ctx context.Context, msg *Message) error

// Subscription is what a subscriber asks of a broker.
type Subscription struct {
	Topic string
	// Group is the consumer group / durable name: the app id, so that
	// instances of one app share the work and different apps each get every
	// message.
	Group string
	// Metadata from the subscription (broker specific).
	Metadata map[string]string
}

// ErrDrop, returned (or wrapped) by a DeliverFunc, acknowledges a message
// that will not be retried (the app said DROP or 404).
var ErrDrop = errors.New("pubsub: drop")

// Options carry what every broker may need when it is built.
type Options struct {
	Name     string            // component name
	Metadata map[string]string // spec.metadata
	AppID    string
	Logger   *zap.Logger
}

// Factory builds brokers of one component type ("pubsub.redis" ...).
// Validate checks metadata without any I/O; New may dial.
type Factory interface {
	Type() string
	New(ctx context.Context, opts Options) (Broker, error)
}

// MetadataValidator is implemented by factories that can check component
// metadata at config load.
type MetadataValidator interface {
	ValidateMetadata(md map[string]string) error
}

var factories = registry.New[Factory]("pubsub", "type")

// Register makes a broker factory available by its component type. Call it
// from init. It panics on an empty or duplicate type.
func Register(f Factory) { factories.Register(f.Type(), f) }

// Get returns the factory of a component type.
func Get(typ string) (Factory, bool) { return factories.Get(typ) }

// Types lists the registered types, sorted.
func Types() []string { return factories.Names() }
