// Package config is switchyard's configuration model: the typed Config, its
// loading (YAML file, daprd-compatible flags, SWITCHYARD_* environment),
// defaults, validation with field paths, Dapr's own resource files, and the
// immutable versioned Snapshot the running proxy swaps atomically.
//
// Keys in our own YAML are snake_case. Dapr resource files keep Dapr's
// camelCase and are parsed as Dapr defines them (dapr.go).
package config

import "time"

// Listener kinds.
const (
	ListenerHTTP     = "http"     // Dapr HTTP API (fasthttp)
	ListenerGRPC     = "grpc"     // Dapr gRPC API
	ListenerInternal = "internal" // sidecar-to-sidecar internal gRPC
	ListenerAdmin    = "admin"    // admin endpoints
	ListenerMetrics  = "metrics"  // Prometheus exposition
)

// Cluster kinds.
const (
	ClusterHTTP    = "http"    // an HTTP upstream; the local HTTP app is one
	ClusterGRPCApp = "grpc"    // a gRPC app (AppCallback OnInvoke, gRPC proxying)
	ClusterSidecar = "sidecar" // remote sidecars of one app id over internal gRPC
)

// Well-known names.
const (
	LocalAppCluster = "app"       // the local app, built from the app_* settings
	DefaultPubSub   = "pubsub"    // the in-memory component given when none is
	RouterFilter    = "router"    // the terminal filter of every chain
	DefaultScheme   = "local"     // name resolution with no configuration
	DefaultHTTPName = "dapr_http" // names of the default listeners
	DefaultGRPCName = "dapr_grpc"
	DefaultIntName  = "dapr_internal"
	DefaultAdmin    = "admin"
	DefaultMetrics  = "metrics"
)

// Config is the whole configuration of one sidecar.
type Config struct {
	// daprd-compatible settings; each is also a flag (--app-id ...) and a
	// SWITCHYARD_* environment variable (SWITCHYARD_APP_ID ...).
	AppID                  string   `json:"app_id"`
	Namespace              string   `json:"namespace"`
	AppPort                int      `json:"app_port"`
	AppProtocol            string   `json:"app_protocol"` // http | grpc
	AppChannelAddress      string   `json:"app_channel_address"`
	AppMaxConcurrency      int      `json:"app_max_concurrency"`      // 0: unlimited
	AppPipelineConns       int      `json:"app_pipeline_connections"` // >0: HTTP/1.1 pipelining to the app over this many connections
	AppPipelineStall       Duration `json:"app_pipeline_stall_after"` // with pipelining: a connection whose answer takes this long with none read meanwhile is passed over; 0: 10ms
	AppHealthTimeout       Duration `json:"app_health_timeout"`       // how long to wait for the app port; 0: forever
	DaprHTTPPort           int      `json:"dapr_http_port"`
	DaprGRPCPort           int      `json:"dapr_grpc_port"`
	DaprInternalGRPCPort   int      `json:"dapr_internal_grpc_port"` // 0: a free port
	DaprListenAddresses    []string `json:"dapr_listen_addresses"`
	MetricsPort            int      `json:"metrics_port"`
	EnableMetrics          *bool    `json:"enable_metrics"`
	AdminPort              int      `json:"admin_port"`
	ResourcesPath          []string `json:"resources_path"`
	DaprConfig             []string `json:"config"` // Dapr Configuration files
	LogLevel               string   `json:"log_level"`
	LogAsJSON              bool     `json:"log_as_json"`
	DaprHTTPMaxRequestSize int      `json:"dapr_http_max_request_size"` // MB
	DaprHTTPReadBufferSize int      `json:"dapr_http_read_buffer_size"` // KB
	GracefulShutdown       Duration `json:"dapr_graceful_shutdown_seconds"`
	APIToken               string   `json:"api_token"`     // DAPR_API_TOKEN
	AppAPIToken            string   `json:"app_api_token"` // APP_API_TOKEN
	Mode                   string   `json:"mode"`          // standalone (the only mode supported)
	// Procs is the number of Ps (GOMAXPROCS) the sidecar runs on; 0 starts
	// on one and adds more while they stay busy (internal/procs).
	Procs int `json:"procs"`
	// InternalHTTP lets sidecar-to-sidecar invocations between switchyard
	// sidecars use HTTP/1.1 on the internal port instead of gRPC (nil: on).
	InternalHTTP *bool `json:"internal_http"`
	// GRPCFrameProxy lets the gRPC API listener and the internal port
	// forward proxied calls (dapr-app-id) frame by frame instead of through
	// grpc-go's server and client (nil: on).
	GRPCFrameProxy *bool `json:"grpc_frame_proxy"`
	// PeerKeepalive: a connection to a switchyard peer (the peer link, gRPC
	// proxying) whose calls wait and that heard nothing from the peer for
	// this long sends a PING, and is given up when that goes unanswered as
	// long again (nil: 10 s; 0: never).
	PeerKeepalive *Duration `json:"peer_keepalive"`

	// Envoy-style model.
	Listeners      []Listener     `json:"listeners"`
	Routes         []Route        `json:"routes"`
	Clusters       []Cluster      `json:"clusters"`
	NameResolution NameResolution `json:"name_resolution"`
	Components     []Component    `json:"components"`
	Subscriptions  []Subscription `json:"subscriptions"`
	AccessControl  *AccessControl `json:"access_control"`

	// Skipped lists the Dapr resources that were read but not used (kinds
	// switchyard does not handle yet), as "<file>: <kind> <name>", so that
	// the runtime can warn about them.
	Skipped []string `json:"-"`
	// Source names the file(s) the config was read from, for messages.
	Source string `json:"-"`
	// origin maps a top-level key to where its value came from (a file,
	// "flag --x", "env X" or "defaults"), for validation messages.
	origin map[string]string
}

// Listener is one socket (or set of addresses) with a protocol and a chain.
type Listener struct {
	Name      string       `json:"name"`
	Kind      string       `json:"kind"`
	Addresses []string     `json:"addresses"` // host:port; one that cannot be bound is skipped with a warning while another works
	Filters   []FilterSpec `json:"filters"`   // in order; the router is last (appended when missing)
}

// FilterSpec names a registered filter and carries its settings, decoded
// strictly into the filter's own config struct.
type FilterSpec struct {
	Name   string         `json:"name"`
	Config map[string]any `json:"config"`
}

// Route matches the logical route key and picks a cluster.
type Route struct {
	Name             string            `json:"name"`
	Match            RouteMatch        `json:"match"`
	Cluster          string            `json:"cluster"`
	WeightedClusters []WeightedCluster `json:"weighted_clusters"`
	Timeout          Duration          `json:"timeout"`
	Idempotent       bool              `json:"idempotent"` // retries may repeat a request the upstream may have seen
}

// RouteMatch: exactly one of Exact, Prefix, Glob, Regex (none: everything),
// and optionally verbs and headers, all of which must match.
type RouteMatch struct {
	Exact   string        `json:"exact"`
	Prefix  string        `json:"prefix"`
	Glob    string        `json:"glob"` // '*' within a segment, '**' across segments
	Regex   string        `json:"regex"`
	Verbs   []string      `json:"verbs"`
	Headers []HeaderMatch `json:"headers"`
}

// HeaderMatch matches one request header; with no value matcher the header
// must be present. Invert negates the result.
type HeaderMatch struct {
	Name    string `json:"name"`
	Exact   string `json:"exact"`
	Prefix  string `json:"prefix"`
	Regex   string `json:"regex"`
	Present *bool  `json:"present"`
	Invert  bool   `json:"invert"`
}

// WeightedCluster is one target of a traffic split.
type WeightedCluster struct {
	Name   string `json:"name"`
	Weight uint32 `json:"weight"`
}

// Cluster is a named set of endpoints behind one transport.
type Cluster struct {
	Name           string   `json:"name"`
	Kind           string   `json:"kind"`      // http | grpc | sidecar
	Endpoints      []string `json:"endpoints"` // host:port, static
	AppID          string   `json:"app_id"`    // sidecar: the app id resolved by name resolution
	LBPolicy       string   `json:"lb_policy"` // round_robin (default) | least_request | random
	MaxConcurrency int      `json:"max_concurrency"`
	MaxConns       int      `json:"max_conns_per_endpoint"`
	PipelineConns  int      `json:"pipeline_connections"` // >0: pipeline HTTP/1.1 requests over this many connections per endpoint
	PipelineStall  Duration `json:"pipeline_stall_after"` // a pipelined connection waiting this long on an answer with none read meanwhile is passed over; 0: 10ms
	ConnectTimeout Duration `json:"connect_timeout"`
	Timeout        Duration `json:"timeout"` // per request, unless the route says otherwise
}

// NameResolution chooses the resolver scheme for sidecar clusters.
type NameResolution struct {
	Scheme string         `json:"scheme"` // local (default), static, dns, mdns, consul
	Config map[string]any `json:"config"`
}

// Component is a Dapr component (today: pub/sub), from a Component file or
// from our YAML.
type Component struct {
	Name         string            `json:"name"`
	Type         string            `json:"type"` // pubsub.redis, pubsub.in-memory, pubsub.jetstream ...
	Version      string            `json:"version"`
	Metadata     map[string]string `json:"metadata"`
	Scopes       []string          `json:"scopes"`
	InitTimeout  Duration          `json:"init_timeout"`
	IgnoreErrors bool              `json:"ignore_errors"`
	File         string            `json:"-"` // where it was read from, for errors
}

// Subscription is a declarative subscription (Dapr Subscription file or our YAML).
type Subscription struct {
	Name            string             `json:"name"`
	PubSub          string             `json:"pubsub"`
	Topic           string             `json:"topic"`
	Route           string             `json:"route"`
	Rules           []SubscriptionRule `json:"rules"`
	DeadLetterTopic string             `json:"dead_letter_topic"`
	Metadata        map[string]string  `json:"metadata"`
	Scopes          []string           `json:"scopes"`
	File            string             `json:"-"`
}

// SubscriptionRule routes events whose CEL Match is true to Path.
type SubscriptionRule struct {
	Match string `json:"match"`
	Path  string `json:"path"`
}

// AccessControl is Dapr's accessControl section.
type AccessControl struct {
	DefaultAction string      `json:"default_action"`
	TrustDomain   string      `json:"trust_domain"`
	Policies      []ACLPolicy `json:"policies"`
}

// ACLPolicy is one app's policy.
type ACLPolicy struct {
	AppID         string         `json:"app_id"`
	DefaultAction string         `json:"default_action"`
	TrustDomain   string         `json:"trust_domain"`
	Namespace     string         `json:"namespace"`
	Operations    []ACLOperation `json:"operations"`
}

// ACLOperation is one operation rule of a policy.
type ACLOperation struct {
	Name     string   `json:"name"`
	HTTPVerb []string `json:"http_verb"`
	Action   string   `json:"action"`
}

// InternalHTTPOn reports whether invocations between switchyard sidecars may
// use HTTP/1.1 on the internal port (the default).
func (c *Config) InternalHTTPOn() bool { return c.InternalHTTP == nil || *c.InternalHTTP }

// DefaultPeerKeepalive is PeerKeepalive's default.
const DefaultPeerKeepalive = 10 * time.Second

// PeerKeepaliveD is the keepalive period of connections to peers (0: off);
// a nil Config has the default.
func (c *Config) PeerKeepaliveD() time.Duration {
	if c == nil || c.PeerKeepalive == nil {
		return DefaultPeerKeepalive
	}
	return c.PeerKeepalive.D()
}

// GRPCFrameProxyOn reports whether gRPC proxying forwards HTTP/2 frames
// (the default) instead of messages through grpc-go.
func (c *Config) GRPCFrameProxyOn() bool { return c.GRPCFrameProxy == nil || *c.GRPCFrameProxy }
