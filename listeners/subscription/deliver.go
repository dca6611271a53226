package subscription

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/cloudevents"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// Subscription metadata keys read by the listener (the rest goes to the
// broker).
const (
	MetaMaxRetries = "maxRetries" // in-listener retries before the dead-letter topic
	MetaRawPayload = "rawPayload" // the messages are not CloudEvents
)

// defaultDLQRetries is how many times a delivery is retried in the
// listener before the message goes to the dead-letter topic, when the
// subscription has one and sets no maxRetries.
const defaultDLQRetries = 3

// Outcome is what the app's answer to a delivery means.
type Outcome uint8

const (
	Ack   Outcome = iota // success: acknowledge
	Retry                // redeliver
	Drop                 // do not redeliver (warning log and metric)
)

func (o Outcome) String() string {
	switch o {
	case Ack:
		return "success"
	case Retry:
		return "retry"
	}
	return "drop"
}

var (
	statusKey     = []byte(`"status"`)
	traceparent   = []byte(`"traceparent":"`)
	expirationKey = []byte(`"expiration"`)
)

// MapResponse maps the app's answer to a delivery as daprd does: any 2xx
// with an empty body, a body that is not JSON, or {"status":"SUCCESS"} (or
// no status) is an ack; {"status":"RETRY"} or an unknown status asks for
// redelivery; {"status":"DROP"} drops; 404 drops; any other status retries.
func MapResponse(status int, body []byte) Outcome {
	switch {
	case status >= 200 && status <= 299:
		if len(body) == 0 || !bytes.Contains(body, statusKey) {
			return Ack
		}
		st, ok := leadingStatus(body)
		if !ok {
			var r struct {
				Status string `json:"status"`
			}
			if json.Unmarshal(body, &r) != nil {
				return Ack
			}
			st = []byte(r.Status)
		}
		switch {
		case len(st) == 0 || equalFoldASCII(st, "SUCCESS"):
			return Ack
		case equalFoldASCII(st, "DROP"):
			return Drop
		}
		return Retry
	case status == http.StatusNotFound:
		return Drop
	}
	return Retry
}

// leadingStatus reads the common answer {"status":"X", ...} without
// decoding: ok is false when the body has another shape.
func leadingStatus(b []byte) ([]byte, bool) {
	b = skipSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, false
	}
	b = skipSpace(b[1:])
	if !bytes.HasPrefix(b, statusKey) {
		return nil, false
	}
	b = skipSpace(b[len(statusKey):])
	if len(b) == 0 || b[0] != ':' {
		return nil, false
	}
	b = skipSpace(b[1:])
	if len(b) == 0 || b[0] != '"' {
		return nil, false
	}
	b = b[1:]
	end := bytes.IndexByte(b, '"')
	if end < 0 || bytes.IndexByte(b[:end], '\\') >= 0 {
		return nil, false
	}
	return b[:end], true
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

func equalFoldASCII(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// sub is one running subscription.
type sub struct {
	l          *Listener
	cfg        config.Subscription
	kind       string
	pubsub     []byte
	topic      []byte
	routes     routes
	maxRetries int
	rawPayload bool
	brokerMD   map[string]string

	handler filters.Handler // the component cluster subscribed to
	broker  pubsub.Broker
	stop    func()
	failing bool // the last subscribe failed (logged once)

	ok, retry, drop *stats.Counter
	lat             *stats.Histogram
}

func (l *Listener) newSub(c collected) (*sub, error) {
	sc := c.cfg
	if sc.PubSub == "" || sc.Topic == "" {
		return nil, fmt.Errorf("subscription: pubsub and topic are required")
	}
	rs, err := compileRoutes(sc.Route, sc.Rules)
	if err != nil {
		return nil, err
	}
	s := &sub{l: l, cfg: sc, kind: c.kind, pubsub: []byte(sc.PubSub), topic: []byte(sc.Topic), routes: rs}
	s.brokerMD = map[string]string{}
	for k, v := range sc.Metadata {
		s.brokerMD[k] = v
	}
	if v, ok := sc.Metadata[MetaRawPayload]; ok {
		s.rawPayload, _ = strconv.ParseBool(v)
	}
	if sc.DeadLetterTopic != "" {
		s.maxRetries = defaultDLQRetries
	}
	if v, ok := sc.Metadata[MetaMaxRetries]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("subscription: metadata %s=%q: want an integer >= 0", MetaMaxRetries, v)
		}
		s.maxRetries = n
	}
	if l.hasStats {
		snap := l.rt.Snapshot()
		app, ns := "", ""
		if snap != nil && snap.Config != nil {
			app, ns = snap.Config.AppID, snap.Config.Namespace
		}
		s.ok = l.ingress.With(app, sc.PubSub, ns, "success", sc.Topic)
		s.retry = l.ingress.With(app, sc.PubSub, ns, "retry", sc.Topic)
		s.drop = l.ingress.With(app, sc.PubSub, ns, "drop", sc.Topic)
		s.lat = l.ingressL.With(app, sc.PubSub, ns, "success", sc.Topic)
	}
	return s, nil
}

// subscribe subscribes to the broker of component cluster h.
func (s *sub) subscribe(h filters.Handler) (func(), error) {
	if h == nil {
		return nil, fmt.Errorf("subscription: pubsub %s not found", s.cfg.PubSub)
	}
	bp, ok := h.(BrokerProvider)
	if !ok {
		return nil, errNoBroker
	}
	if sc, ok := h.(SubscribeScoper); ok && !sc.SubscribeAllowed(s.cfg.Topic) {
		return nil, fmt.Errorf("subscription: topic %s is not allowed for this app by the scopes of pubsub %s", s.cfg.Topic, s.cfg.PubSub)
	}
	group := ""
	if snap := s.l.rt.Snapshot(); snap != nil && snap.Config != nil {
		group = snap.Config.AppID
	}
	s.broker = bp.Broker()
	stop, err := s.broker.Subscribe(s.l.ctx, pubsub.Subscription{Topic: s.cfg.Topic, Group: group, Metadata: s.brokerMD}, s.deliver)
	if err != nil {
		return nil, fmt.Errorf("subscription: %s/%s: %w", s.cfg.PubSub, s.cfg.Topic, err)
	}
	return stop, nil
}

// deliver hands one message to the app, retrying in the listener up to
// maxRetries, then dead-lettering (when a dead-letter topic is set) or
// returning the error so that the broker redelivers.
func (s *sub) deliver(ctx context.Context, msg *pubsub.Message) error {
	start := time.Now()
	data, path, err := s.prepare(msg)
	if err != nil {
		return err // not deliverable now; the broker redelivers
	}
	if data == nil {
		s.count(Drop, start)
		s.l.log.Warn("event expired; dropped", zap.String("pubsub", s.cfg.PubSub), zap.String("topic", s.cfg.Topic), zap.String("message_id", msg.ID))
		return fmt.Errorf("subscription: expired: %w", pubsub.ErrDrop)
	}
	if path == nil {
		s.count(Drop, start)
		s.l.log.Warn("no route matches the event and the subscription has no default route; dropped",
			zap.String("pubsub", s.cfg.PubSub), zap.String("topic", s.cfg.Topic), zap.String("message_id", msg.ID))
		return s.dropped(ctx, msg, errNoRoute)
	}
	backoff := s.l.opts.RetryBackoff
	for attempt := 0; ; attempt++ {
		out, err := s.once(ctx, data, path)
		switch out {
		case Ack:
			s.count(Ack, start)
			return nil
		case Drop:
			s.count(Drop, start)
			s.l.log.Warn("the app dropped a pub/sub event (DROP status or 404)",
				zap.String("pubsub", s.cfg.PubSub), zap.String("topic", s.cfg.Topic), zap.String("message_id", msg.ID), zap.Error(err))
			return s.dropped(ctx, msg, err)
		}
		s.count(Retry, start)
		if attempt >= s.maxRetries {
			if s.cfg.DeadLetterTopic != "" {
				if derr := s.deadLetter(ctx, msg); derr != nil {
					return fmt.Errorf("%w; %w", err, derr)
				}
				s.l.log.Warn("delivery failed after retries; sent to the dead-letter topic",
					zap.String("pubsub", s.cfg.PubSub), zap.String("topic", s.cfg.Topic),
					zap.String("dead_letter_topic", s.cfg.DeadLetterTopic), zap.String("message_id", msg.ID), zap.Error(err))
				return nil
			}
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

var errNoRoute = errors.New("subscription: no route matches the event")

// dropped acknowledges a dropped message, sending it to the dead-letter
// topic first when there is one.
func (s *sub) dropped(ctx context.Context, msg *pubsub.Message, cause error) error {
	if s.cfg.DeadLetterTopic != "" {
		if err := s.deadLetter(ctx, msg); err != nil {
			return err // redeliver rather than lose it
		}
	}
	if cause == nil {
		cause = errors.New("dropped by the app")
	}
	return fmt.Errorf("subscription: %s/%s: %w: %w", s.cfg.PubSub, s.cfg.Topic, cause, pubsub.ErrDrop)
}

func (s *sub) deadLetter(ctx context.Context, msg *pubsub.Message) error {
	dl := &pubsub.Message{Topic: s.cfg.DeadLetterTopic, Data: msg.Data, ContentType: msg.ContentType, Metadata: msg.Metadata}
	var err error
	if p, ok := s.handler.(Publisher); ok {
		err = p.Publish(ctx, s.cfg.DeadLetterTopic, dl)
	} else {
		err = s.broker.Publish(ctx, s.cfg.DeadLetterTopic, dl)
	}
	if err != nil {
		return fmt.Errorf("subscription: %s/%s: dead-letter topic %s: %w", s.cfg.PubSub, s.cfg.Topic, s.cfg.DeadLetterTopic, err)
	}
	return nil
}

func (s *sub) count(o Outcome, start time.Time) {
	if s.ok == nil {
		return
	}
	switch o {
	case Ack:
		s.ok.Inc()
		s.lat.ObserveSince(start)
	case Retry:
		s.retry.Inc()
	default:
		s.drop.Inc()
	}
}

// prepare returns the body to deliver and its route. data is nil for an
// expired event; path is nil when no route applies.
func (s *sub) prepare(msg *pubsub.Message) (data, path []byte, err error) {
	data = msg.Data
	isCE := len(data) > 0 && data[0] == '{' && !s.rawPayload
	if !isCE {
		// A raw payload: delivered in an envelope as daprd does for
		// rawPayload subscriptions (data_base64).
		data = cloudevents.FromRawPayload(msg.Data, s.cfg.Topic, s.cfg.PubSub)
	}
	if bytes.Contains(data, expirationKey) {
		if ev, perr := cloudevents.Parse(data); perr == nil && ev.Expired(time.Now()) {
			return nil, s.routes.def, nil
		}
	}
	if len(s.routes.rules) == 0 {
		return data, s.routes.def, nil
	}
	fields, ferr := cloudevents.Fields(data)
	if ferr != nil {
		return data, s.routes.def, nil
	}
	return data, s.routes.pick(fields), nil
}

// once runs one delivery through the chain.
func (s *sub) once(ctx context.Context, data, path []byte) (Outcome, error) {
	ch := s.l.chain.Load()
	if ch == nil {
		return Retry, errors.New("subscription: no chain")
	}
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolSubscription
	ex.Listener = s.l.name
	ex.SetPublish(true, s.pubsub, s.topic)
	ex.Method = path
	ex.Timeout = s.l.opts.DeliveryTimeout
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 && d < ex.Timeout {
			ex.Timeout = d
		}
	}
	req := ex.Req
	req.Header.SetMethod(http.MethodPost)
	req.SetRequestURI("/")
	req.Header.SetContentType(cloudevents.ContentType)
	if tp := fieldValue(data, traceparent); len(tp) > 0 {
		req.Header.SetBytesV("traceparent", tp)
	}
	req.SetBody(data)
	if err := ch.Handle(ctx, ex); err != nil {
		var fe *filters.Error
		if errors.As(err, &fe) && fe.GRPCCode == codes.Unimplemented {
			// a gRPC app without OnTopicEvent: not retriable, as for daprd
			return Drop, fmt.Errorf("subscription: %s/%s: deliver to %s: %w", s.cfg.PubSub, s.cfg.Topic, path, err)
		}
		return Retry, fmt.Errorf("subscription: %s/%s: deliver to %s: %w", s.cfg.PubSub, s.cfg.Topic, path, err)
	}
	sc := ex.Resp.StatusCode()
	o := MapResponse(sc, ex.Resp.Body())
	if o == Ack {
		return Ack, nil
	}
	return o, fmt.Errorf("subscription: %s/%s: app answered %d on %s (%s)", s.cfg.PubSub, s.cfg.Topic, sc, path, o)
}

// fieldValue returns the value of a top-level-looking JSON string field
// (key includes the opening quote of the value), or nil.
func fieldValue(data, key []byte) []byte {
	i := bytes.Index(data, key)
	if i < 0 {
		return nil
	}
	v := data[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j <= 0 {
		return nil
	}
	return v[:j]
}
