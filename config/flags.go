package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// EnvPrefix prefixes the environment variable of every setting:
// --app-id is also SWITCHYARD_APP_ID.
const EnvPrefix = "SWITCHYARD_"

// Environment variables daprd reads, which switchyard reads too.
const (
	EnvAPIToken    = "DAPR_API_TOKEN" // checked against dapr-api-token on the Dapr API
	EnvAppAPIToken = "APP_API_TOKEN"  // sent to the app as dapr-api-token
	EnvNamespace   = "NAMESPACE"      // the namespace when --namespace is not given
)

// ModeStandalone is the only --mode supported.
const ModeStandalone = "standalone"

// setting is one daprd-style setting: a flag (unless flag is empty), its
// environment variables and the key of the same setting in our YAML (the
// json tag of its Config field), which is also its viper key.
type setting struct {
	key   string
	flag  string
	short string
	env   []string // extra environment variables read besides SWITCHYARD_<KEY>
	def   any      // string, int, bool, []string or time.Duration: also the flag's type
	usage string
	set   func(c *Config, v any) error
}

// envName is SWITCHYARD_<KEY>.
func (s setting) envName() string { return EnvPrefix + strings.ToUpper(s.key) }

// settings lists every daprd-compatible setting; the flags, the environment
// and the defaults all come from this table.
var settings = []setting{
	{key: "app_id", flag: "app-id", def: "", usage: "A unique ID for the app; used for service invocation and pub/sub",
		set: func(c *Config, v any) (err error) { c.AppID, err = asString(v); return }},
	{key: "app_port", flag: "app-port", def: 0, usage: "The port the application is listening on (0: no app)",
		set: func(c *Config, v any) (err error) { c.AppPort, err = asInt(v); return }},
	{key: "app_protocol", flag: "app-protocol", def: "http", usage: "Protocol of the application: http or grpc",
		set: func(c *Config, v any) (err error) { c.AppProtocol, err = asString(v); return }},
	{key: "app_channel_address", flag: "app-channel-address", def: "127.0.0.1", usage: "The network address the application listens on",
		set: func(c *Config, v any) (err error) { c.AppChannelAddress, err = asString(v); return }},
	{key: "app_max_concurrency", flag: "app-max-concurrency", def: -1, usage: "Concurrency limit when forwarding requests to the app; -1 or 0 for no limit",
		set: func(c *Config, v any) (err error) { c.AppMaxConcurrency, err = asInt(v); return }},
	{key: "app_pipeline_connections", flag: "app-pipeline-connections", def: 2, usage: "Pipeline HTTP/1.1 requests to the app in batches over this many connections, while the app answers them quickly (0: off, one request per connection at a time)",
		set: func(c *Config, v any) (err error) { c.AppPipelineConns, err = asInt(v); return }},
	{key: "app_pipeline_stall_after", flag: "app-pipeline-stall-after", def: time.Duration(0), usage: "With pipelining, pass over a connection whose answer has been waited on this long with none read meanwhile, and join a busy one only while the wait there looks under half of it; requests that find none go on a connection of their own (0: 10ms)",
		set: func(c *Config, v any) (err error) { c.AppPipelineStall, err = asDuration(v, time.Second); return }},
	{key: "app_health_timeout", flag: "app-health-timeout", def: time.Duration(0), usage: "How long to wait for the app port to open; 0 waits forever",
		set: func(c *Config, v any) (err error) { c.AppHealthTimeout, err = asDuration(v, time.Second); return }},
	{key: "dapr_http_port", flag: "dapr-http-port", def: 3500, usage: "HTTP port for the Dapr API to listen on",
		set: func(c *Config, v any) (err error) { c.DaprHTTPPort, err = asInt(v); return }},
	{key: "dapr_grpc_port", flag: "dapr-grpc-port", def: 50001, usage: "gRPC port for the Dapr API to listen on",
		set: func(c *Config, v any) (err error) { c.DaprGRPCPort, err = asInt(v); return }},
	{key: "dapr_internal_grpc_port", flag: "dapr-internal-grpc-port", def: 0, usage: "gRPC port for the internal API other sidecars call (0: a free port)",
		set: func(c *Config, v any) (err error) { c.DaprInternalGRPCPort, err = asInt(v); return }},
	{key: "dapr_listen_addresses", flag: "dapr-listen-addresses", def: []string(nil), usage: "Addresses the Dapr HTTP and gRPC APIs listen on, comma separated (default: all interfaces)",
		set: func(c *Config, v any) (err error) { c.DaprListenAddresses, err = asStrings(v); return }},
	{key: "metrics_port", flag: "metrics-port", def: 9090, usage: "The port for the Prometheus metrics endpoint",
		set: func(c *Config, v any) (err error) { c.MetricsPort, err = asInt(v); return }},
	{key: "enable_metrics", flag: "enable-metrics", def: true, usage: "Serve Prometheus metrics",
		set: func(c *Config, v any) error {
			b, err := asBool(v)
			c.EnableMetrics = &b
			return err
		}},
	{key: "admin_port", flag: "admin-port", def: 9901, usage: "The port for the admin endpoints (on 127.0.0.1)",
		set: func(c *Config, v any) (err error) { c.AdminPort, err = asInt(v); return }},
	{key: "resources_path", flag: "resources-path", def: []string(nil), usage: "A directory of Dapr resource files (Component, Subscription); repeatable",
		set: func(c *Config, v any) (err error) { c.ResourcesPath, err = asStrings(v); return }},
	{key: "components_path", flag: "components-path", def: "", usage: "Older alias of --resources-path",
		set: func(c *Config, v any) error {
			s, err := asString(v)
			if s != "" {
				c.ResourcesPath = append(c.ResourcesPath, s)
			}
			return err
		}},
	{key: "config", flag: "config", short: "c", def: []string(nil), usage: "A switchyard YAML file or a Dapr Configuration file; repeatable, later files win",
		set: func(c *Config, v any) (err error) { c.DaprConfig, err = asStrings(v); return }},
	{key: "log_level", flag: "log-level", def: "info", usage: "Log level: debug, info, warn, error or fatal",
		set: func(c *Config, v any) (err error) { c.LogLevel, err = asString(v); return }},
	{key: "internal_http", flag: "internal-http", def: true, usage: "Let invocations between switchyard sidecars use the peer link (HTTP/1.1 messages multiplexed on one connection) on the internal port (gRPC with any other peer)",
		set: func(c *Config, v any) (err error) {
			b, err := asBool(v)
			c.InternalHTTP = &b
			return err
		}},
	{key: "peer_keepalive", flag: "peer-keepalive", def: DefaultPeerKeepalive, usage: "PING a connection to a switchyard peer sidecar (the peer link, gRPC proxying) whose calls wait and that heard nothing from the peer for this long, and give it up (failing its calls) when that goes unanswered as long again; 0: never",
		set: func(c *Config, v any) (err error) {
			d, err := asDuration(v, time.Second)
			c.PeerKeepalive = &d
			return err
		}},
	{key: "grpc_frame_proxy", flag: "grpc-frame-proxy", def: true, usage: "Forward gRPC proxying calls (dapr-app-id) frame by frame on the gRPC API and internal ports; false: through grpc-go's server and client",
		set: func(c *Config, v any) (err error) {
			b, err := asBool(v)
			c.GRPCFrameProxy = &b
			return err
		}},
	{key: "procs", flag: "procs", def: 0, usage: "Run on this many Ps (Go's GOMAXPROCS); 0: start on one and add more, up to the CPUs the process may use, while they stay busy (a GOMAXPROCS environment variable wins)",
		set: func(c *Config, v any) (err error) { c.Procs, err = asInt(v); return }},
	{key: "log_as_json", flag: "log-as-json", def: false, usage: "Write logs as JSON",
		set: func(c *Config, v any) (err error) { c.LogAsJSON, err = asBool(v); return }},
	{key: "dapr_http_max_request_size", flag: "dapr-http-max-request-size", def: 4, usage: "Max size of a request body, in MB",
		set: func(c *Config, v any) (err error) { c.DaprHTTPMaxRequestSize, err = asInt(v); return }},
	{key: "dapr_http_read_buffer_size", flag: "dapr-http-read-buffer-size", def: 4, usage: "Size of the HTTP read buffer (and so the max size of headers), in KB",
		set: func(c *Config, v any) (err error) { c.DaprHTTPReadBufferSize, err = asInt(v); return }},
	{key: "dapr_graceful_shutdown_seconds", flag: "dapr-graceful-shutdown-seconds", def: 5, usage: "How long in-flight requests may take to finish on shutdown, in seconds",
		set: func(c *Config, v any) (err error) { c.GracefulShutdown, err = asDuration(v, time.Second); return }},
	{key: "namespace", flag: "namespace", def: "", usage: "The namespace of this app (default: $NAMESPACE, else \"default\")",
		set: func(c *Config, v any) (err error) { c.Namespace, err = asString(v); return }},
	{key: "mode", flag: "mode", def: ModeStandalone, usage: "Runtime mode; only standalone is supported",
		set: func(c *Config, v any) (err error) { c.Mode, err = asString(v); return }},
	{key: "api_token", env: []string{EnvAPIToken}, def: "",
		set: func(c *Config, v any) (err error) { c.APIToken, err = asString(v); return }},
	{key: "app_api_token", env: []string{EnvAppAPIToken}, def: "",
		set: func(c *Config, v any) (err error) { c.AppAPIToken, err = asString(v); return }},
}

// settingByKey finds a setting by its YAML key.
func settingByKey(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

// BindFlags registers switchyard's daprd-compatible flags on fs. Call it
// before fs.Parse, then Load(fs).
func BindFlags(fs *pflag.FlagSet) {
	for _, s := range settings {
		if s.flag == "" {
			continue
		}
		usage := s.usage + " (env " + s.envName() + ")"
		switch d := s.def.(type) {
		case string:
			fs.StringP(s.flag, s.short, d, usage)
		case int:
			fs.IntP(s.flag, s.short, d, usage)
		case bool:
			fs.BoolP(s.flag, s.short, d, usage)
		case []string:
			fs.StringSliceP(s.flag, s.short, d, usage)
		case time.Duration:
			fs.DurationP(s.flag, s.short, d, usage)
		default:
			panic(fmt.Sprintf("config: setting %s has a default of unsupported type %T", s.key, s.def))
		}
	}
	_ = fs.MarkDeprecated("components-path", "use --resources-path")
}

// Defaults returns the built-in defaults of every daprd-compatible setting,
// before any file, environment or flag, with the model's defaults applied.
func Defaults() *Config {
	c := &Config{}
	for _, s := range settings {
		if err := s.set(c, s.def); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", s.key, err))
		}
	}
	c.ApplyDefaults()
	return c
}

// The as* helpers turn what viper holds (typed flag values, strings from
// the environment, YAML scalars from files) into one setting's type.

func asString(v any) (string, error) {
	switch t := v.(type) {
	case nil:
		return "", nil
	case string:
		return t, nil
	case []string:
		return strings.Join(t, ","), nil
	}
	if s, ok := scalarText(v); ok {
		return s, nil
	}
	return "", fmt.Errorf("cannot use %s as a string", describe(v))
}

func asInt(v any) (int, error) {
	switch t := v.(type) {
	case nil:
		return 0, nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(t))
		if err != nil {
			return 0, fmt.Errorf("invalid integer %q", t)
		}
		return n, nil
	case int32:
		return int(t), nil
	}
	n, ok := number(v)
	if !ok || n != float64(int(n)) {
		return 0, fmt.Errorf("cannot use %s as an integer", describe(v))
	}
	return int(n), nil
}

func asBool(v any) (bool, error) {
	switch t := v.(type) {
	case nil:
		return false, nil
	case bool:
		return t, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(t))
		if err != nil {
			return false, fmt.Errorf("invalid boolean %q", t)
		}
		return b, nil
	}
	return false, fmt.Errorf("cannot use %s as a boolean", describe(v))
}

// asStrings reads a list: a YAML list, a flag's values, or a comma
// separated string (environment).
func asStrings(v any) ([]string, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case []string:
		return t, nil
	case string:
		var out []string
		for _, s := range strings.Split(t, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	case []any:
		out := make([]string, 0, len(t))
		for i, e := range t {
			s, ok := scalarText(e)
			if !ok {
				return nil, fmt.Errorf("[%d]: cannot use %s as a string", i, describe(e))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot use %s as a list of strings", describe(v))
}

// asDuration reads a duration: "1.5s", a time.Duration, or a plain number
// of units (seconds for the settings daprd gives in seconds).
func asDuration(v any, unit time.Duration) (Duration, error) {
	switch t := v.(type) {
	case nil:
		return 0, nil
	case time.Duration:
		return Duration(t), nil
	case Duration:
		return t, nil
	case string:
		t = strings.TrimSpace(t)
		if n, err := strconv.ParseFloat(t, 64); err == nil {
			return Duration(n * float64(unit)), nil
		}
		d, err := time.ParseDuration(t)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", t)
		}
		return Duration(d), nil
	}
	n, ok := number(v)
	if !ok {
		return 0, fmt.Errorf("cannot use %s as a duration", describe(v))
	}
	return Duration(n * float64(unit)), nil
}
