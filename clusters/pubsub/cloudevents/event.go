package cloudevents

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// Event is a CloudEvent as a subscriber reads it.
type Event struct {
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	SpecVersion     string          `json:"specversion"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Subject         string          `json:"subject,omitempty"`
	Time            string          `json:"time,omitempty"`
	Topic           string          `json:"topic,omitempty"`
	PubSubName      string          `json:"pubsubname,omitempty"`
	TraceID         string          `json:"traceid,omitempty"`
	TraceParent     string          `json:"traceparent,omitempty"`
	TraceState      string          `json:"tracestate,omitempty"`
	Expiration      string          `json:"expiration,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`        // the raw JSON of data, as stored
	DataBase64      string          `json:"data_base64,omitempty"` // binary payloads
}

// Parse reads a serialized CloudEvent. It fails with ErrInvalid when data is
// not a JSON object or lacks id, type or specversion (then the message is a
// raw payload, not an envelope).
func Parse(data []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if ev.ID == "" || ev.Type == "" || ev.SpecVersion == "" {
		return Event{}, fmt.Errorf("%w: id, type and specversion are required", ErrInvalid)
	}
	return ev, nil
}

// Payload returns the event's data as the app published it: data_base64
// decoded, a JSON string data unquoted (unless the content type is JSON, as
// for text/plain payloads), any other data as its raw JSON.
func (e *Event) Payload() ([]byte, error) {
	if e.DataBase64 != "" {
		b, err := base64.StdEncoding.DecodeString(e.DataBase64)
		if err != nil {
			return nil, fmt.Errorf("%w: data_base64: %w", ErrInvalid, err)
		}
		return b, nil
	}
	d := bytes.TrimSpace(e.Data)
	if len(d) > 0 && d[0] == '"' && !IsJSON(e.DataContentType) {
		var s string
		if err := json.Unmarshal(d, &s); err != nil {
			return nil, fmt.Errorf("%w: data: %w", ErrInvalid, err)
		}
		return []byte(s), nil
	}
	if bytes.Equal(d, []byte("null")) {
		return nil, nil
	}
	return d, nil
}

// Expired reports whether the event has an expiration before now (daprd
// drops such events instead of delivering them).
func (e *Event) Expired(now time.Time) bool {
	if e.Expiration == "" {
		return false
	}
	t, err := time.Parse(time.RFC3339, e.Expiration)
	return err == nil && t.Before(now)
}

// Fields returns the CloudEvent as a map for CEL routing rules (the `event`
// variable of a subscription rule: event.type, event.data.amount ...).
// Numbers are float64. When data is a JSON string and the content type is
// JSON, the string is decoded so that rules can look inside it.
func Fields(data []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: null", ErrInvalid)
	}
	if s, ok := m["data"].(string); ok {
		if ct, _ := m["datacontenttype"].(string); IsJSON(ct) {
			var v any
			if json.Unmarshal([]byte(s), &v) == nil {
				m["data"] = v
			}
		}
	}
	return m, nil
}

// FromRawPayload wraps a raw (non-CloudEvent) message in an envelope for an
// app that subscribed with rawPayload, as daprd does on the subscriber side:
// a fresh id, application/octet-stream, the payload in data_base64.
func FromRawPayload(data []byte, topic, pubsub string) []byte {
	b := make([]byte, 0, 256+base64.StdEncoding.EncodedLen(len(data)))
	b = append(b, `{"data_base64":"`...)
	b = base64.StdEncoding.AppendEncode(b, data)
	b = append(b, '"')
	b = appendField(b, "datacontenttype", OctetStreamContentType)
	b = append(b, `,"id":"`...)
	b = appendUUID(b)
	b = append(b, '"')
	b = appendField(b, "pubsubname", pubsub)
	b = appendField(b, "source", DefaultSource)
	b = appendField(b, "specversion", SpecVersion)
	b = appendField(b, "topic", topic)
	b = appendField(b, "type", DefaultType)
	return append(b, '}')
}
