// Package cloudevents builds and reads the CloudEvents 1.0 envelope that
// daprd wraps around every published message, so that switchyard and daprd
// can publish to and consume from the same topics.
//
// New builds the envelope on the publish side (or returns the payload as is
// for rawPayload); Parse, Fields and FromRawPayload serve the delivery side
// and CEL routing rules.
package cloudevents

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Well-known values, as daprd has them.
const (
	SpecVersion            = "1.0"
	DefaultType            = "com.dapr.event.sent"
	DefaultSource          = "Dapr" // source of an existing CloudEvent without one, when Options.Source is empty
	DefaultDataContentType = "text/plain"
	ContentType            = "application/cloudevents+json"
	JSONContentType        = "application/json"
	OctetStreamContentType = "application/octet-stream"

	// MetadataRawPayload is the publish metadata key (metadata.rawPayload=true)
	// that asks for no envelope at all.
	MetadataRawPayload = "rawPayload"
	// MetadataTTL is the publish metadata key that sets the event's expiration.
	MetadataTTL = "ttlInSeconds"
)

// ErrInvalid is wrapped by every error about a payload that is not a usable
// CloudEvent (the publish route answers ERR_PUBSUB_CLOUD_EVENTS_SER).
var ErrInvalid = errors.New("cloudevents: invalid cloud event")

// Options describe one published message.
type Options struct {
	ID              string // empty: a random UUID v4
	Source          string // the publishing app id
	Type            string // empty: com.dapr.event.sent
	Subject         string // optional
	Topic           string
	PubSub          string // component name
	DataContentType string // empty: text/plain
	Data            []byte
	TraceParent     string
	TraceState      string
	TraceID         string // empty: TraceParent (daprd sets both)

	// Metadata is the publish request's metadata (metadata.* query
	// parameters or gRPC metadata). Honoured keys: rawPayload,
	// ttlInSeconds, and the overrides cloudevent.id, cloudevent.source,
	// cloudevent.type, cloudevent.traceid, cloudevent.traceparent,
	// cloudevent.tracestate (case-insensitive, as daprd decodes them).
	Metadata map[string]string

	// RawPayload asks for no envelope: New returns Data unchanged. It is
	// also true when Metadata has rawPayload=true.
	RawPayload bool

	// Now is the publish time (zero: time.Now()); for tests.
	Now time.Time
}

// IsRawPayload reports whether publish or subscription metadata asks for
// rawPayload (the value parses as true).
func IsRawPayload(md map[string]string) bool {
	v, ok := md[MetadataRawPayload]
	if !ok {
		for k, val := range md {
			if strings.EqualFold(k, MetadataRawPayload) {
				v, ok = val, true
				break
			}
		}
	}
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

// New returns what the broker stores for a published message: the
// serialized CloudEvent (content type application/cloudevents+json), or the
// payload itself for rawPayload.
func New(opts Options) ([]byte, error) {
	return Append(make([]byte, 0, 512+2*len(opts.Data)), opts)
}

// Append is New appending to dst, for callers that pool their buffers.
//
// A payload whose content type is application/cloudevents+json is an
// existing CloudEvent: its fields are kept, topic and pubsubname are set,
// the trace fields are set when the publisher has a trace context, and a
// missing id, source, type and specversion are filled in. Otherwise a new
// envelope is built: JSON payloads (application/json) go into data as JSON,
// application/octet-stream into data_base64, anything else into data as a
// string. Fields are written in sorted order, as daprd's json.Marshal of
// its map writes them.
func Append(dst []byte, opts Options) ([]byte, error) {
	if opts.RawPayload || (len(opts.Metadata) > 0 && IsRawPayload(opts.Metadata)) {
		return append(dst, opts.Data...), nil
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC()
	if isContentType(opts.DataContentType, ContentType) {
		return appendExisting(dst, &opts, now)
	}
	if len(opts.Metadata) > 0 {
		applyOverrides(&opts)
	}
	ct := opts.DataContentType
	if ct == "" {
		ct = DefaultDataContentType
	}
	typ := opts.Type
	if typ == "" {
		typ = DefaultType
	}
	traceID := opts.TraceID
	if traceID == "" {
		traceID = opts.TraceParent
	}

	b := append(dst, '{')
	switch {
	case isContentType(ct, JSONContentType) && json.Valid(opts.Data):
		b = append(b, `"data":`...)
		b = appendCompactJSON(b, opts.Data)
	case isContentType(ct, OctetStreamContentType):
		b = append(b, `"data_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, opts.Data)
		b = append(b, '"')
	default:
		b = append(b, `"data":`...)
		b = appendString(b, opts.Data)
	}
	b = appendField(b, "datacontenttype", ct)
	if exp, ok := expiration(opts.Metadata, now); ok {
		b = appendField(b, "expiration", exp)
	}
	b = append(b, `,"id":`...)
	if opts.ID == "" {
		b = append(b, '"')
		b = appendUUID(b)
		b = append(b, '"')
	} else {
		b = appendString(b, opts.ID)
	}
	b = appendField(b, "pubsubname", opts.PubSub)
	b = appendField(b, "source", opts.Source)
	b = appendField(b, "specversion", SpecVersion)
	if opts.Subject != "" {
		b = appendField(b, "subject", opts.Subject)
	}
	b = append(b, `,"time":"`...)
	b = now.AppendFormat(b, time.RFC3339)
	b = append(b, '"')
	b = appendField(b, "topic", opts.Topic)
	b = appendField(b, "traceid", traceID)
	b = appendField(b, "traceparent", opts.TraceParent)
	b = appendField(b, "tracestate", opts.TraceState)
	b = appendField(b, "type", typ)
	return append(b, '}'), nil
}

// appendExisting fills in a CloudEvent the app built itself.
func appendExisting(dst []byte, opts *Options, now time.Time) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(opts.Data))
	dec.UseNumber() // keep big numbers exact
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return dst, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if m == nil {
		return dst, fmt.Errorf("%w: null", ErrInvalid)
	}
	m["topic"] = opts.Topic
	m["pubsubname"] = opts.PubSub
	traceID := opts.TraceID
	if traceID == "" {
		traceID = opts.TraceParent
	}
	setTrace := func(k, v string) {
		if _, ok := m[k]; v != "" || !ok {
			m[k] = v
		}
	}
	setTrace("traceid", traceID)
	setTrace("traceparent", opts.TraceParent)
	setTrace("tracestate", opts.TraceState)
	if isEmpty(m["id"]) {
		if opts.ID != "" {
			m["id"] = opts.ID
		} else {
			m["id"] = string(appendUUID(nil))
		}
	}
	if isEmpty(m["source"]) {
		m["source"] = opts.Source
		if opts.Source == "" {
			m["source"] = DefaultSource
		}
	}
	if isEmpty(m["type"]) {
		m["type"] = DefaultType
		if opts.Type != "" {
			m["type"] = opts.Type
		}
	}
	if isEmpty(m["specversion"]) {
		m["specversion"] = SpecVersion
	}
	if exp, ok := expiration(opts.Metadata, now); ok {
		m["expiration"] = exp
	}
	out, err := json.Marshal(m)
	if err != nil {
		return dst, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return append(dst, out...), nil
}

func isEmpty(v any) bool {
	s, ok := v.(string)
	return v == nil || (ok && s == "")
}

// applyOverrides honours daprd's cloudevent.* publish metadata.
func applyOverrides(o *Options) {
	for k, v := range o.Metadata {
		if len(k) <= len("cloudevent.") || !strings.EqualFold(k[:len("cloudevent.")], "cloudevent.") {
			continue
		}
		switch strings.ToLower(k[len("cloudevent."):]) {
		case "id":
			o.ID = v
		case "source":
			o.Source = v
		case "type":
			o.Type = v
		case "traceid":
			o.TraceID = v
		case "traceparent":
			o.TraceParent = v
		case "tracestate":
			o.TraceState = v
		}
	}
}

// expiration returns the RFC 3339 expiration for a ttlInSeconds in md.
func expiration(md map[string]string, now time.Time) (string, bool) {
	v, ok := md[MetadataTTL]
	if !ok || v == "" {
		return "", false
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs <= 0 {
		return "", false
	}
	return now.Add(time.Duration(secs) * time.Second).Format(time.RFC3339), true
}

// isContentType compares a media type, ignoring case and parameters.
func isContentType(ct, want string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), want)
}

// IsJSON reports whether a content type is application/json.
func IsJSON(ct string) bool { return isContentType(ct, JSONContentType) }

// IsCloudEvent reports whether a content type is application/cloudevents+json.
func IsCloudEvent(ct string) bool { return isContentType(ct, ContentType) }

func appendField(b []byte, name, val string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, val)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string the way encoding/json does
// (HTML-safe, invalid UTF-8 replaced by U+FFFD).
func appendString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = appendEscapedByte(b, c)
			i++
			start = i
			continue
		}
		var rb [utf8.UTFMax]byte
		n := copy(rb[:], s[i:min(i+utf8.UTFMax, len(s))])
		r, size := utf8.DecodeRune(rb[:n])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func appendEscapedByte(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
}

// appendCompactJSON appends valid JSON src without insignificant
// whitespace, escaping <, >, & and U+2028/9 inside strings as encoding/json
// does. Member order and number spelling are kept as the publisher wrote
// them.
func appendCompactJSON(b, src []byte) []byte {
	inStr, esc := false, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			case c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
				continue
			case c == 0xE2 && i+2 < len(src) && src[i+1] == 0x80 && (src[i+2] == 0xA8 || src[i+2] == 0xA9):
				b = append(b, `\u202`...)
				b = append(b, hexDigits[src[i+2]&0xF])
				i += 2
				continue
			}
			b = append(b, c)
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			inStr = true
		}
		b = append(b, c)
	}
	return b
}

// appendUUID appends a random (version 4) UUID.
func appendUUID(b []byte) []byte {
	var u [16]byte
	_, _ = rand.Read(u[:]) // never fails (crypto/rand, Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[x>>4], hexDigits[x&0xF])
	}
	return b
}
