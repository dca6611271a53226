// Package metrics is the filter that records daprd's HTTP server and service
// invocation metrics, with daprd's names and labels, in the runtime's
// registry (prefix "dapr_").
package metrics

import (
	"context"
	"time"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
)

// Label values of daprd's type label.
const (
	typeUnary     = "unary"
	typeStreaming = "streaming"
)

// The HTTP verbs daprd reports as themselves; others are "UNKNOWN".
var verbs = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "UNKNOWN"}

const verbUnknown = len(verbs) - 1

func verbIndex(m []byte) int {
	switch string(m) { // no allocation: the compiler converts in place
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "PATCH":
		return 4
	case "DELETE":
		return 5
	case "CONNECT":
		return 6
	case "OPTIONS":
		return 7
	case "TRACE":
		return 8
	}
	return verbUnknown
}

// Filter records metrics around the rest of the chain.
type Filter struct {
	appID        string
	excludeVerbs bool

	// http_server_*: one status table per verb.
	httpByVerb   [len(verbs)]*statusTable[httpSeries]
	requestBytes *stats.Histogram
	respBytes    *stats.Histogram

	// Outbound invocations (this app calls another), by target app id.
	out *appTable[outSeries]
	// Inbound invocations (on the internal listener), by caller app id.
	in *appTable[inSeries]
}

var _ filters.Filter = (*Filter)(nil)

type httpSeries struct {
	count, respCount *stats.Counter
	latency          *stats.Histogram
}

type outSeries struct {
	sentUnary, sentStream *stats.Counter
	recv                  statusTable[recvSeries]
}

type recvSeries struct {
	unary, stream *stats.Counter
	latency       *stats.Histogram
}

type inSeries struct {
	recv *stats.Counter
	sent statusTable[stats.Counter]
}

// New builds the filter; with no registry in env it records nothing.
func New(c Config, env filters.Env) *Filter {
	f := &Filter{appID: env.AppID, excludeVerbs: c.ExcludeVerbs}
	r := env.Metrics
	if r == nil {
		return f
	}
	max := c.MaxAppIDs
	if max == 0 {
		max = DefaultMaxAppIDs
	}
	app := env.AppID

	reqCount := r.Counter("http_server_request_count", "Count of HTTP requests processed by the server.", "app_id", "method", "path", "status")
	respCount := r.Counter("http_server_response_count", "The number of HTTP responses", "app_id", "method", "path", "status")
	latency := r.Histogram("http_server_latency", "HTTP request end-to-end latency in server.", stats.LatencyBucketsMS, "app_id", "method", "path", "status")
	f.requestBytes = r.Histogram("http_server_request_bytes", "HTTP request body size if set as ContentLength (uncompressed) in server.", stats.SizeBuckets, "app_id").With(app)
	f.respBytes = r.Histogram("http_server_response_bytes", "HTTP response body size (uncompressed) in server.", stats.SizeBuckets, "app_id").With(app)
	for i := range verbs {
		verb := verbs[i]
		if c.ExcludeVerbs {
			if i > 0 {
				f.httpByVerb[i] = f.httpByVerb[0]
				continue
			}
			verb = ""
		}
		f.httpByVerb[i] = &statusTable[httpSeries]{mk: func(status string) *httpSeries {
			return &httpSeries{
				count:     reqCount.With(app, verb, "", status),
				respCount: respCount.With(app, verb, "", status),
				latency:   latency.With(app, verb, "", status),
			}
		}}
	}

	reqSent := r.Counter("runtime_service_invocation_req_sent_total", "The number of requests sent via service invocation.", "app_id", "dst_app_id", "type")
	resRecv := r.Counter("runtime_service_invocation_res_recv_total", "The number of responses received via service invocation.", "app_id", "src_app_id", "status", "type")
	resLatency := r.Histogram("runtime_service_invocation_res_recv_latency_ms", "The latency of service invocation response.", stats.LatencyBucketsMS, "app_id", "src_app_id", "status")
	f.out = newAppTable(max, func(dst string) *outSeries {
		s := &outSeries{
			sentUnary:  reqSent.With(app, dst, typeUnary),
			sentStream: reqSent.With(app, dst, typeStreaming),
		}
		s.recv.mk = func(status string) *recvSeries {
			return &recvSeries{
				unary:   resRecv.With(app, dst, status, typeUnary),
				stream:  resRecv.With(app, dst, status, typeStreaming),
				latency: resLatency.With(app, dst, status),
			}
		}
		return s
	})

	reqRecv := r.Counter("runtime_service_invocation_req_recv_total", "The number of requests received via service invocation.", "app_id", "src_app_id")
	resSent := r.Counter("runtime_service_invocation_res_sent_total", "The number of responses sent via service invocation.", "app_id", "dst_app_id", "status")
	f.in = newAppTable(max, func(src string) *inSeries {
		s := &inSeries{recv: reqRecv.With(app, src)}
		s.sent.mk = func(status string) *stats.Counter { return resSent.With(app, src, status) }
		return s
	})
	return f
}

// Wrap returns the measuring handler.
func (f *Filter) Wrap(next filters.Handler) filters.Handler {
	if f.out == nil {
		return next // no registry: nothing to record
	}
	return &handler{f: f, next: next}
}

type handler struct {
	f    *Filter
	next filters.Handler
}

func (h *handler) Handle(ctx context.Context, ex *filters.Exchange) error {
	f := h.f
	start := time.Now()

	// Which invocation series apply is decided before the call: later
	// filters may rewrite the route.
	var out *outSeries
	var in *inSeries
	streaming := ex.Stream != nil
	if ex.Kind == filters.KindInvoke {
		switch ex.Protocol {
		case filters.ProtocolHTTP, filters.ProtocolGRPC:
			// Invoking our own app id goes straight to the app: daprd counts
			// no service invocation for it.
			if string(ex.AppID) != f.appID {
				out = f.out.get(ex.AppID)
				if streaming {
					out.sentStream.Inc()
				} else {
					out.sentUnary.Inc()
				}
			}
		case filters.ProtocolInternal:
			in = f.in.get(ex.CallerAppID)
			in.recv.Inc()
		}
	}
	var reqBytes int
	if ex.Protocol == filters.ProtocolHTTP {
		if reqBytes = len(ex.Req.Body()); reqBytes == 0 {
			reqBytes = max(ex.Req.Header.ContentLength(), 0) // a streamed body
		}
	}

	err := h.next.Handle(ctx, ex)

	elapsed := float64(time.Since(start).Nanoseconds()) / 1e6
	status := statusOf(ex, err)
	if ex.Protocol == filters.ProtocolHTTP {
		s := f.httpByVerb[verbIndex(ex.Req.Header.Method())].get(status)
		s.count.Inc()
		s.respCount.Inc()
		s.latency.Observe(elapsed)
		f.requestBytes.Observe(float64(reqBytes))
		f.respBytes.Observe(float64(len(ex.Resp.Body())))
	}
	// daprd records a received response only when one came back.
	if out != nil && err == nil {
		r := out.recv.get(status)
		if streaming {
			r.stream.Inc()
		} else {
			r.unary.Inc()
		}
		r.latency.Observe(elapsed)
	}
	if in != nil {
		in.sent.get(status).Inc()
	}
	return err
}

// statusOf is the HTTP status the client gets: the response's, or the one
// the listener will answer the error with.
func statusOf(ex *filters.Exchange, err error) int {
	if err == nil {
		return ex.Resp.StatusCode()
	}
	if fe, ok := err.(*filters.Error); ok {
		return fe.HTTPStatus
	}
	return filters.AsError(err, ex.Kind).HTTPStatus
}
