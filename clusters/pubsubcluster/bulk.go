package pubsubcluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/pubsub/cloudevents"
	"github.com/switchyard-proxy/switchyard/filters"
)

// BulkEntry is one entry of a bulk publish request (the HTTP API's JSON
// shape; the gRPC listener encodes BulkPublishRequestEntry the same way).
type BulkEntry struct {
	EntryID     string            `json:"entryId"`
	Event       json.RawMessage   `json:"event"`
	ContentType string            `json:"contentType"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// BulkResponse is the body of a bulk publish answer when entries failed.
type BulkResponse struct {
	FailedEntries []BulkFailedEntry `json:"failedEntries"`
	ErrorCode     string            `json:"errorCode,omitempty"`
}

// BulkFailedEntry names an entry the broker did not take.
type BulkFailedEntry struct {
	EntryID string `json:"entryId"`
	Error   string `json:"error,omitempty"`
}

// bulkParallel bounds the publishes of one bulk request in flight.
const bulkParallel = 16

// bulk serves a bulk publish: every entry is enveloped and published (in
// parallel, as daprd's default bulk publisher does). All taken: 204. Some
// not taken: 500 with the failed entries, errorCode
// ERR_PUBSUB_PUBLISH_MESSAGE, as daprd answers.
func (c *Cluster) bulk(ctx context.Context, ex *filters.Exchange) error {
	topic := string(ex.Topic)
	var entries []BulkEntry
	if err := json.Unmarshal(ex.Req.Body(), &entries); err != nil {
		return filters.NewError(filters.ErrCodePubSubCloudEvents, http.StatusBadRequest, codes.InvalidArgument,
			"error when unmarshaling the request for topic %s pubsub %s: %v", topic, c.opts.Name, err)
	}
	reqMD := requestMetadata(ex)
	raw := len(reqMD) > 0 && cloudevents.IsRawPayload(reqMD)
	seen := make(map[string]struct{}, len(entries))
	msgs := make([]pubsub.Message, len(entries))
	for i := range entries {
		e := &entries[i]
		if _, dup := seen[e.EntryID]; dup || e.EntryID == "" {
			return filters.NewError(filters.ErrCodePubSubCloudEvents, http.StatusBadRequest, codes.InvalidArgument,
				"error when marshaling events for topic %s pubsub %s: entryId is duplicated or not present for entry", topic, c.opts.Name)
		}
		seen[e.EntryID] = struct{}{}
		data, err := eventBytes(e.Event, e.ContentType)
		if err != nil {
			return filters.NewError(filters.ErrCodePubSubCloudEvents, http.StatusBadRequest, codes.InvalidArgument,
				"error when marshaling event of entry %s for topic %s pubsub %s: %v", e.EntryID, topic, c.opts.Name, err)
		}
		md := reqMD
		if len(e.Metadata) > 0 {
			md = make(map[string]string, len(reqMD)+len(e.Metadata))
			for k, v := range reqMD {
				md[k] = v
			}
			for k, v := range e.Metadata {
				md[k] = v
			}
		}
		m := &msgs[i]
		m.Topic, m.Metadata = topic, md
		if raw {
			m.Data, m.ContentType = data, e.ContentType
			continue
		}
		m.Data, err = c.envelope(nil, ex, topic, data, e.ContentType, md)
		if err != nil {
			return err
		}
		m.ContentType = cloudevents.ContentType
	}

	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, bulkParallel)
	for i := range msgs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = c.send(ctx, topic, &msgs[i])
		}()
	}
	wg.Wait()

	var res BulkResponse
	for i, err := range errs {
		if err != nil {
			res.FailedEntries = append(res.FailedEntries, BulkFailedEntry{EntryID: entries[i].EntryID, Error: err.Error()})
		}
	}
	ex.Resp.Reset()
	if len(res.FailedEntries) == 0 {
		ex.Resp.SetStatusCode(http.StatusNoContent)
		return nil
	}
	res.ErrorCode = filters.ErrCodePubSubPublish
	body, _ := json.Marshal(res)
	ex.Resp.SetStatusCode(http.StatusInternalServerError)
	ex.Resp.Header.SetContentType("application/json")
	ex.Resp.SetBody(body)
	return nil
}

// eventBytes turns a bulk entry's event into the payload bytes, as daprd
// does: binary content types carry base64 in a JSON string, text types a
// JSON string, JSON and CloudEvents any JSON value.
func eventBytes(ev json.RawMessage, ct string) ([]byte, error) {
	mt := strings.ToLower(strings.TrimSpace(ct))
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = strings.TrimSpace(mt[:i])
	}
	switch {
	case mt == cloudevents.OctetStreamContentType:
		var s string
		if err := json.Unmarshal(ev, &s); err != nil {
			return nil, fmt.Errorf("pubsubcluster: binary event must be a base64 string: %w", err)
		}
		return base64.StdEncoding.DecodeString(s)
	case strings.HasPrefix(mt, "text/") || mt == "application/xml":
		var s string
		if err := json.Unmarshal(ev, &s); err != nil {
			return nil, fmt.Errorf("pubsubcluster: %s event must be a string: %w", ct, err)
		}
		return []byte(s), nil
	case mt == cloudevents.JSONContentType || mt == cloudevents.ContentType || strings.HasSuffix(mt, "+json"):
		if len(ev) == 0 {
			return []byte("null"), nil
		}
		return ev, nil
	}
	return nil, fmt.Errorf("pubsubcluster: unsupported content type %q for a bulk event", ct)
}
