// Package grpcapp is the cluster kind "grpc": the local app over gRPC
// (--app-protocol grpc). Invocations call AppCallback.OnInvoke; pub/sub
// deliveries call AppCallback.OnTopicEvent and answer like an HTTP app
// would ({"status":"SUCCESS"|"RETRY"|"DROP"}); proxied gRPC streams
// (dapr-app-id) are pumped frame by frame to the app's own gRPC server.
package grpcapp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/clusters/internal/limit"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/internal/h2proxy"
	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

func init() { clusters.RegisterKind(kind{}) }

type kind struct{}

var _ clusters.Builder = kind{}

func (kind) Kind() string { return config.ClusterGRPCApp }

func (kind) Build(c config.Cluster, env clusters.Env) (clusters.Cluster, error) {
	return New(Options{Name: c.Name, AppID: env.AppID, Endpoints: c.Endpoints,
		MaxConcurrency: c.MaxConcurrency, Timeout: c.Timeout.D(), AppAPIToken: env.AppAPIToken})
}

// Options configure a gRPC app cluster.
type Options struct {
	Name           string
	AppID          string // our own app id (dapr-callee-app-id)
	Endpoints      []string
	MaxConcurrency int           // 0: unlimited
	Timeout        time.Duration // per request unless the route sets one; 0: none
	AppAPIToken    string        // sent as dapr-api-token
}

// Cluster is a gRPC app cluster.
type Cluster struct {
	opts  Options
	conns []*conn
	rr    atomic.Uint32
	sem   limit.Gate
}

type conn struct {
	addr string
	once sync.Once
	cc   *grpc.ClientConn
	err  error

	frameOnce sync.Once
	frames    *h2proxy.Pool // HTTP/2 connection for bridged calls
}

var _ clusters.Cluster = (*Cluster)(nil)

const (
	methodOnInvoke     = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
	methodOnTopicEvent = "/dapr.proto.runtime.v1.AppCallback/OnTopicEvent"
)

// New builds a cluster; it dials on first use.
func New(o Options) (*Cluster, error) {
	if len(o.Endpoints) == 0 {
		return nil, fmt.Errorf("grpcapp: %s: no endpoints", o.Name)
	}
	c := &Cluster{opts: o}
	for _, e := range o.Endpoints {
		if _, _, err := net.SplitHostPort(e); err != nil {
			return nil, fmt.Errorf("grpcapp: %s: endpoint %q: %w", o.Name, e, err)
		}
		c.conns = append(c.conns, &conn{addr: e})
	}
	c.sem = limit.New(o.MaxConcurrency)
	return c, nil
}

// Close closes the connections.
func (c *Cluster) Close() error {
	for _, cn := range c.conns {
		cn.once.Do(func() { cn.err = fmt.Errorf("grpcapp: %s: closed", c.opts.Name) })
		if cn.cc != nil {
			_ = cn.cc.Close()
		}
		cn.frameOnce.Do(func() {})
		if cn.frames != nil {
			cn.frames.Close()
		}
	}
	return nil
}

// pick chooses an endpoint round robin.
func (c *Cluster) pick() *conn {
	if len(c.conns) == 1 {
		return c.conns[0]
	}
	return c.conns[c.rr.Add(1)%uint32(len(c.conns))]
}

func (c *Cluster) conn() (*grpc.ClientConn, error) { return c.pick().client() }

func (cn *conn) client() (*grpc.ClientConn, error) {
	cn.once.Do(func() {
		cn.cc, cn.err = grpc.NewClient("passthrough:///"+cn.addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(rawio.DialContext),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	})
	return cn.cc, cn.err
}

// Handle sends the exchange to the app.
func (c *Cluster) Handle(ctx context.Context, ex *filters.Exchange) error {
	timeout := ex.Timeout
	if timeout == 0 {
		timeout = c.opts.Timeout
	}
	if c.sem != nil {
		// The route timeout covers the wait for a slot and the call.
		waited, err := c.sem.Acquire(ctx, timeout)
		if err != nil {
			return c.fail(ex, limit.Code(err), err)
		}
		defer c.sem.Release()
		if timeout > 0 {
			if timeout -= waited; timeout <= 0 {
				return c.fail(ex, codes.DeadlineExceeded, limit.ErrTimeout)
			}
		}
	}
	cn := c.pick()
	if ex.Stream != nil {
		if st, ok := ex.Stream.Native().(*h2proxy.Stream); ok {
			return c.bridge(ctx, cn, st)
		}
	}
	cc, err := cn.client()
	if err != nil {
		return c.fail(ex, codes.Internal, err)
	}
	if ex.Stream != nil {
		return c.proxy(ctx, cc, ex)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ctx = metadata.NewOutgoingContext(ctx, c.outgoing(ex))
	if ex.Kind == filters.KindDeliver {
		return c.deliver(ctx, cc, ex)
	}
	return c.invoke(ctx, cc, ex)
}

func (c *Cluster) fail(ex *filters.Exchange, gc codes.Code, err error) error {
	return filters.NewError(filters.ErrCodeDirectInvoke, http.StatusInternalServerError, gc,
		"failed to invoke, id: %s, err: %v", ex.AppID, err)
}

// appError turns the app's status into the error the listener answers
// with: the app's own code and message, or a Dapr error when the app could
// not be reached.
func (c *Cluster) appError(ex *filters.Exchange, err error) error {
	st := status.Convert(err)
	if st.Code() == codes.Unavailable && strings.Contains(st.Message(), "connection") {
		return c.fail(ex, codes.Unavailable, err)
	}
	return &filters.Error{Code: filters.ErrCodeDirectInvoke, GRPCCode: st.Code(),
		HTTPStatus: grpcwire.HTTPStatusFromCode(st.Code()), Message: st.Message(), Err: err}
}

// outgoing builds the metadata sent to the app from the request headers,
// with the caller and callee ids and the app token.
func (c *Cluster) outgoing(ex *filters.Exchange) metadata.MD {
	md := make(metadata.MD, 8)
	for k, v := range ex.Req.Header.All() {
		if skipHeader(k) {
			continue
		}
		key := strings.ToLower(string(k))
		val := string(v)
		if strings.HasSuffix(key, "-bin") {
			d, err := base64.StdEncoding.DecodeString(val)
			if err != nil {
				continue
			}
			val = string(d)
		}
		md[key] = append(md[key], val)
	}
	if len(ex.CallerAppID) > 0 {
		md.Set(grpcwire.MDCallerID, string(ex.CallerAppID))
	} else {
		md.Set(grpcwire.MDCallerID, c.opts.AppID)
	}
	md.Set(grpcwire.MDCalleeID, c.opts.AppID)
	if c.opts.AppAPIToken != "" {
		md.Set("dapr-api-token", c.opts.AppAPIToken)
	} else {
		delete(md, "dapr-api-token")
	}
	return md
}

func skipHeader(k []byte) bool {
	switch strings.ToLower(string(k)) {
	case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
		"trailer", "content-length", "content-type", "user-agent":
		return true
	}
	return bytes.HasPrefix(bytes.ToLower(k), []byte("grpc-")) && !bytes.EqualFold(k, []byte(grpcwire.MDTraceBin))
}

// InvokeRequest builds OnInvoke's request from the exchange (the body is
// not copied).
func InvokeRequest(ex *filters.Exchange) *commonv1pb.InvokeRequest {
	return &commonv1pb.InvokeRequest{
		Method:      string(ex.Method),
		Data:        &anypb.Any{Value: ex.Req.Body()},
		ContentType: string(ex.Req.Header.ContentType()),
		HttpExtension: &commonv1pb.HTTPExtension{
			Verb:        grpcwire.VerbOf(ex.Req.Header.Method()),
			Querystring: string(ex.Req.URI().QueryString()),
		},
	}
}

func (c *Cluster) invoke(ctx context.Context, cc *grpc.ClientConn, ex *filters.Exchange) error {
	var hdr, trl metadata.MD
	resp := new(commonv1pb.InvokeResponse)
	if err := cc.Invoke(ctx, methodOnInvoke, InvokeRequest(ex), resp, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
		return c.appError(ex, err)
	}
	r := ex.Resp
	r.SetStatusCode(http.StatusOK)
	for k, vs := range hdr {
		if k == "content-type" || strings.HasSuffix(k, "-bin") {
			continue
		}
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	if ct := resp.GetContentType(); ct != "" {
		r.Header.SetContentType(ct)
	}
	r.SetBodyRaw(resp.GetData().GetValue())
	if len(trl) > 0 {
		ex.SetValue(grpcwire.TrailerKey, trl)
	}
	return nil
}

// TopicEventRequest builds OnTopicEvent's request from the CloudEvent in
// ex's body.
func TopicEventRequest(ex *filters.Exchange) (*runtimev1pb.TopicEventRequest, error) {
	var ce map[string]json.RawMessage
	if err := json.Unmarshal(ex.Req.Body(), &ce); err != nil {
		return nil, fmt.Errorf("grpcapp: the delivered message is not a CloudEvent: %w", err)
	}
	str := func(k string) string {
		var s string
		if v, ok := ce[k]; ok {
			_ = json.Unmarshal(v, &s)
		}
		delete(ce, k)
		return s
	}
	req := &runtimev1pb.TopicEventRequest{
		Id: str("id"), Source: str("source"), Type: str("type"), SpecVersion: str("specversion"),
		DataContentType: str("datacontenttype"), Topic: str("topic"), PubsubName: str("pubsubname"),
		Path: string(ex.Method),
	}
	if req.Topic == "" {
		req.Topic = string(ex.Topic)
	}
	if req.PubsubName == "" {
		req.PubsubName = string(ex.PubSub)
	}
	if b64 := str("data_base64"); b64 != "" {
		d, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("grpcapp: data_base64: %w", err)
		}
		req.Data = d
	} else if raw, ok := ce["data"]; ok {
		delete(ce, "data")
		var s string
		if !strings.Contains(req.DataContentType, "json") && json.Unmarshal(raw, &s) == nil {
			req.Data = []byte(s)
		} else {
			req.Data = raw
		}
	}
	if len(ce) > 0 {
		ext := make(map[string]any, len(ce))
		for k, v := range ce {
			var x any
			if json.Unmarshal(v, &x) == nil {
				ext[k] = x
			}
		}
		if s, err := structpb.NewStruct(ext); err == nil {
			req.Extensions = s
		}
	}
	return req, nil
}

var (
	bodySuccess = []byte(`{"status":"SUCCESS"}`)
	bodyRetry   = []byte(`{"status":"RETRY"}`)
	bodyDrop    = []byte(`{"status":"DROP"}`)
)

func (c *Cluster) deliver(ctx context.Context, cc *grpc.ClientConn, ex *filters.Exchange) error {
	req, err := TopicEventRequest(ex)
	if err != nil {
		return filters.NewError(filters.ErrCodePubSubCloudEvents, http.StatusBadRequest, codes.InvalidArgument, "%v", err)
	}
	resp := new(runtimev1pb.TopicEventResponse)
	if err := cc.Invoke(ctx, methodOnTopicEvent, req, resp); err != nil {
		return c.appError(ex, err)
	}
	r := ex.Resp
	r.SetStatusCode(http.StatusOK)
	r.Header.SetContentType("application/json")
	switch resp.GetStatus() {
	case runtimev1pb.TopicEventResponse_RETRY:
		r.SetBodyRaw(bodyRetry)
	case runtimev1pb.TopicEventResponse_DROP:
		r.SetBodyRaw(bodyDrop)
	default:
		r.SetBodyRaw(bodySuccess)
	}
	return nil
}

// bridge forwards a proxied call's HTTP/2 frames to the app's gRPC server
// (the listeners' frame mode). The app gets the caller's header fields as
// they came, with its own :authority, the app API token in place of the
// caller's Dapr API token, and what is left of the deadline in
// grpc-timeout.
func (c *Cluster) bridge(ctx context.Context, cn *conn, st *h2proxy.Stream) error {
	cn.frameOnce.Do(func() { cn.frames = h2proxy.NewPool(cn.addr, nil) })
	if cn.frames == nil {
		return fmt.Errorf("grpcapp: %s: closed", c.opts.Name)
	}
	in := st.Fields()
	fields := make([]hpack.HeaderField, 0, len(in)+1)
	for _, f := range in {
		switch f.Name {
		case ":authority":
			f.Value = cn.addr
		case "dapr-api-token":
			continue
		case "grpc-timeout":
			f = h2proxy.UpstreamTimeout(ctx, f)
		}
		fields = append(fields, f)
	}
	if c.opts.AppAPIToken != "" {
		fields = append(fields, hpack.HeaderField{Name: "dapr-api-token", Value: c.opts.AppAPIToken, Sensitive: true})
	}
	return st.Bridge(ctx, cn.frames, fields)
}

// proxy opens the same method on the app's gRPC server and pumps frames.
func (c *Cluster) proxy(ctx context.Context, cc *grpc.ClientConn, ex *filters.Exchange) error {
	ss, ok := ex.Stream.Native().(grpc.ServerStream)
	if !ok {
		return filters.ErrStreamUnsupported
	}
	out := grpcwire.OutgoingFromIncoming(grpcwire.IncomingMD(ctx, ex.Stream))
	if c.opts.AppAPIToken != "" {
		out.Set("dapr-api-token", c.opts.AppAPIToken)
	} else {
		delete(out, "dapr-api-token") // the caller's Dapr API token is not the app's
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	cs, err := cc.NewStream(ctx, grpcwire.StreamDesc, ex.Stream.FullMethod(), grpc.ForceCodecV2(grpcwire.RawCodec))
	if err != nil {
		return err
	}
	return grpcwire.Pump(ss, cs, cancel)
}
