package config

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const testdata = "../testdata/config"

func TestLoadFileExample(t *testing.T) {
	c, err := LoadFile(filepath.Join(testdata, "switchyard.yaml"))
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	yes := true
	tests := []struct {
		name      string
		got, want any
	}{
		{"app id", c.AppID, "orders"},
		{"namespace", c.Namespace, "shop"},
		{"app port", c.AppPort, 3000},
		{"app health timeout", c.AppHealthTimeout, Duration(30 * time.Second)},
		{"graceful shutdown read as seconds", c.GracefulShutdown, Duration(10 * time.Second)},
		{"max request size", c.DaprHTTPMaxRequestSize, 8},
		{"resources path relative to the file", c.ResourcesPath, []string{filepath.Join(testdata, "resources")}},
		{"listeners kept as given", len(c.Listeners), 5},
		{"listener addresses", c.Listeners[0].Addresses, []string{"127.0.0.1:3500", "[::1]:3500"}},
		{"filter order", []string{c.Listeners[0].Filters[0].Name, c.Listeners[0].Filters[1].Name, c.Listeners[0].Filters[2].Name}, []string{"apitoken", "ratelimit", "router"}},
		{"filter config kept as a map", c.Listeners[0].Filters[1].Config, map[string]any{"requests_per_second": 500.0, "burst": 100.0}},
		{"route verbs", c.Routes[0].Match.Verbs, []string{"POST"}},
		{"route timeout", c.Routes[0].Timeout, Duration(5 * time.Second)},
		{"header match", c.Routes[1].Match.Headers, []HeaderMatch{{Name: "x-canary", Exact: "1"}}},
		{"weighted clusters", c.Routes[2].WeightedClusters, []WeightedCluster{{Name: "billing_v1", Weight: 90}, {Name: "billing_canary", Weight: 10}}},
		{"idempotent", c.Routes[2].Idempotent, true},
		{"glob", c.Routes[3].Match.Glob, "/invoke/reports/method/v*/**"},
		{"regex and inverted presence", c.Routes[4].Match.Headers, []HeaderMatch{{Name: "x-debug", Present: &yes, Invert: true}}},
		{"default lb policy", c.Clusters[0].LBPolicy, "round_robin"},
		{"lb policy kept", c.Clusters[1].LBPolicy, "least_request"},
		{"cluster timeouts", []Duration{c.Clusters[2].ConnectTimeout, c.Clusters[2].Timeout}, []Duration{Duration(time.Second), Duration(10 * time.Second)}},
		{"name resolution", c.NameResolution.Scheme, "static"},
		{"components: yaml then resources, no in-memory default", componentNames(c.Components), []string{"events", "orderpubsub"}},
		{"yaml metadata numbers kept as text", c.Components[0].Metadata, map[string]string{"maxConcurrency": "16"}},
		{"subscriptions from resources", len(c.Subscriptions), 2},
		{"skipped kinds", c.Skipped, []string{filepath.Join(testdata, "resources", "resiliency.yaml") + `: Resiliency "myresiliency" is not used`}},
		{"source", c.Source, filepath.Join(testdata, "switchyard.yaml")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %#v, want %#v", tc.got, tc.want)
			}
		})
	}
}

func componentNames(cs []Component) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestGolden loads the example and compares its normalized JSON (defaults
// applied) with switchyard.golden.json. Run with -update to rewrite it.
func TestGolden(t *testing.T) {
	t.Setenv(EnvNamespace, "")
	c, err := LoadFile(filepath.Join(testdata, "switchyard.yaml"))
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	got, err := json.MarshalIndent(struct {
		Config  *Config  `json:"config"`
		Skipped []string `json:"skipped"`
	}{c, c.Skipped}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join(testdata, "switchyard.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./config -run TestGolden -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("normalized config differs from %s (run with -update if the change is intended):\n%s", golden, got)
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // every problem, in order; {file} is the file's path
	}{
		{"unknown field with its index", "unknown_field.yaml", []string{
			`{file}: listeners[0].adress: unknown field`,
		}},
		{"unknown listener kind", "unknown_kind.yaml", []string{
			`{file}: listeners[1].kind: unknown listener kind "htp" (want http, grpc, internal, admin, metrics, subscription)`,
		}},
		{"two matchers", "two_matchers.yaml", []string{
			`{file}: routes[0].match: set only one of exact, prefix, glob, regex`,
		}},
		{"bad regex", "bad_regex.yaml", []string{
			"{file}: routes[2].match.regex: invalid regex: error parsing regexp: missing closing ): `^/invoke/(orders$`",
		}},
		{"undefined clusters and zero weight", "undefined_cluster.yaml", []string{
			`{file}: routes[0]: cluster "orders_v3" is not defined`,
			`{file}: routes[1].weighted_clusters[1]: cluster "billing_v2" is not defined`,
			`{file}: routes[1].weighted_clusters[1].weight: must be greater than 0`,
		}},
		{"duplicates and collisions", "duplicates.yaml", []string{
			`{file}: listeners[1].name: duplicate listener name "api" (also listeners[0])`,
			`{file}: listeners[1].addresses[0]: "0.0.0.0:3500" collides with listener "api" on port 3500`,
			`{file}: clusters[1].name: duplicate cluster name "billing" (also clusters[0])`,
			`{file}: clusters[2].name: "app" is reserved for the local app (built from the app_* settings)`,
			`{file}: routes[1].name: duplicate route name "r" (also routes[0])`,
		}},
		{"addresses and endpoints", "bad_addresses.yaml", []string{
			`{file}: listeners[0].addresses[0]: "localhost" is not host:port: missing port in address`,
			`{file}: listeners[1].addresses[0]: "127.0.0.1:70000": port 70000 out of range (0-65535)`,
			`{file}: listeners[1].addresses[1]: "127.0.0.1:http": port "http" is not a number`,
			`{file}: listeners[2].addresses: at least one host:port is required`,
			`{file}: clusters[0].endpoints[0]: "10.0.0.7:0": port 0 cannot be dialled`,
			`{file}: clusters[1].endpoints: at least one host:port is required for a http cluster`,
		}},
		{"settings", "settings.yaml", []string{
			`{file}: app_id: "orders.v1" must not contain dots, slashes or spaces`,
			`{file}: app_protocol: unknown protocol "https" (want http, grpc)`,
			`{file}: mode: unsupported mode "kubernetes" (only standalone is supported)`,
			`{file}: log_level: unknown level "verbose" (want debug, info, warn, error, fatal)`,
			`{file}: dapr_http_port: port 70000 out of range (0-65535)`,
			`{file}: dapr_http_max_request_size: must be greater than 0 (MB)`,
		}},
		{"missing app id", "missing_app_id.yaml", []string{
			`app_id: required (--app-id, SWITCHYARD_APP_ID or app_id in a config file)`,
		}},
		{"wrong types", "wrong_types.yaml", []string{
			`{file}: app_port: cannot use string "3000x" as an integer`,
			`{file}: enable_metrics: cannot use string "yes please" as a boolean`,
			`{file}: listeners: cannot use an object as a list`,
			`{file}: routes[0].match.verbs: cannot use string "GET" as a list`,
			`{file}: routes[0].timeout: invalid duration "soon" (want e.g. "1.5s", "250ms")`,
			`{file}: routes[0].weighted_clusters[0].weight: must not be negative`,
		}},
		{"match shapes", "bad_match.yaml", []string{
			`{file}: routes[0].match.glob: "/invoke/a**/method": "**" must be a whole segment ("/**/"), not part of "a**"`,
			`{file}: routes[0].match.verbs[0]: unknown verb "GTE"`,
			`{file}: routes[0].match.headers[0].name: required`,
			`{file}: routes[0].match.headers[1]: set only one of exact, prefix, regex, present`,
			"{file}: routes[0].match.headers[2].regex: invalid regex: error parsing regexp: missing closing ]: `[`",
			`{file}: routes[1].match.prefix: "invoke/orders" must start with "/" (route keys look like /invoke/<app-id>/method/<method>)`,
		}},
		{"components and subscriptions", "bad_component.yaml", []string{
			`{file}: components[0].type: "redis" is not a supported component type (want pubsub.<kind>, e.g. pubsub.redis)`,
			`{file}: components[1].name: duplicate component name "events" (also components[0])`,
			`{file}: subscriptions[0].pubsub: component "nowhere" is not defined`,
			`{file}: subscriptions[1].topic: required`,
			`{file}: subscriptions[1].route: required (or routing rules)`,
		}},
		{"config key in a file", "config_key.yaml", []string{
			`{file}: config: a config file cannot name other config files (use --config again)`,
		}},
		{"component given as config", "component_as_config.yaml", []string{
			`{file}: kind Component cannot be a --config file (want a Dapr Configuration or switchyard YAML; put Dapr resources in a --resources-path directory)`,
		}},
		{"invalid yaml", "invalid_yaml.yaml", []string{
			`{file}: invalid YAML: line 2: did not find expected '-' indicator`,
		}},
		{"secret store in a component file", "secret_ref.yaml", []string{
			`{dir}/secret_ref/pubsub.yaml: Component "orderpubsub": spec.initTimeout: invalid duration "soon"`,
			`{dir}/secret_ref/pubsub.yaml: Component "orderpubsub": spec.metadata[1] (redisPassword): secretKeyRef: secret stores are not supported yet`,
		}},
		{"dapr access control in dapr's names", "bad_acl.yaml", []string{
			`app_id: required (--app-id, SWITCHYARD_APP_ID or app_id in a config file)`,
			`{file}: spec.accessControl.defaultAction: unknown action "maybe" (want allow or deny)`,
			`{file}: spec.accessControl.policies[0].trustDomain: required`,
			`{file}: spec.accessControl.policies[0].operations[0].httpVerb[0]: unknown verb "FETCH"`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(testdata, "bad")
			file := filepath.Join(dir, tc.file)
			c, err := LoadFile(file)
			if err == nil {
				t.Fatalf("LoadFile(%s) = %+v, want an error", file, c)
			}
			got := strings.Split(err.Error(), "\n")
			want := make([]string, len(tc.want))
			for i, w := range tc.want {
				want[i] = strings.NewReplacer("{file}", file, "{dir}", dir).Replace(w)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
		})
	}
}

// writeFile writes a file in a test's temporary directory.
func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// clearEnv unsets every variable Load reads, for the length of a test.
func clearEnv(t *testing.T) {
	for _, s := range settings {
		for _, e := range s.envNames() {
			t.Setenv(e, "")
		}
	}
	t.Setenv(EnvNamespace, "")
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	first := writeFile(t, dir, "first.yaml", "app_id: orders\ndapr_http_port: 4000\nlog_level: debug\nnamespace: fromfile\n")
	second := writeFile(t, dir, "second.yaml", "dapr_http_port: 4001\n")
	type result struct {
		HTTPPort  int
		LogLevel  string
		Namespace string
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want result
	}{
		{"built-in defaults", []string{"--app-id", "orders"}, nil, result{3500, "info", "default"}},
		{"file over defaults", []string{"-c", first}, nil, result{4000, "debug", "fromfile"}},
		{"later file wins", []string{"-c", first, "--config", second}, nil, result{4001, "debug", "fromfile"}},
		{"env over file", []string{"-c", first}, map[string]string{"SWITCHYARD_DAPR_HTTP_PORT": "4100", "SWITCHYARD_NAMESPACE": "fromenv"}, result{4100, "debug", "fromenv"}},
		{"flag over env", []string{"-c", first, "--dapr-http-port", "4200"}, map[string]string{"SWITCHYARD_DAPR_HTTP_PORT": "4100"}, result{4200, "debug", "fromfile"}},
		{"explicit flag equal to the default still wins", []string{"-c", first, "--dapr-http-port", "3500"}, nil, result{3500, "debug", "fromfile"}},
		{"config files from the environment", []string{}, map[string]string{"SWITCHYARD_CONFIG": first + "," + second}, result{4001, "debug", "fromfile"}},
		{"NAMESPACE when nothing else says", []string{"--app-id", "orders"}, map[string]string{"NAMESPACE": "prod"}, result{3500, "info", "prod"}},
		{"file namespace over NAMESPACE", []string{"-c", first}, map[string]string{"NAMESPACE": "prod"}, result{4000, "debug", "fromfile"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c := mustLoad(t, tc.args...)
			got := result{c.DaprHTTPPort, c.LogLevel, c.Namespace}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func mustLoad(t *testing.T, args ...string) *Config {
	t.Helper()
	fs := pflag.NewFlagSet("switchyard", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	c, err := Load(fs)
	if err != nil {
		t.Fatalf("Load(%v): %v", args, err)
	}
	return c
}

func TestLoadSettings(t *testing.T) {
	res := filepath.Join(testdata, "resources")
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"tokens from dapr's variables", []string{"--app-id", "orders"}, map[string]string{"DAPR_API_TOKEN": "s3cret", "APP_API_TOKEN": "app"}, func(t *testing.T, c *Config) {
			if c.APIToken != "s3cret" || c.AppAPIToken != "app" {
				t.Errorf("tokens = %q, %q", c.APIToken, c.AppAPIToken)
			}
		}},
		{"listen addresses from the environment", []string{"--app-id", "orders"}, map[string]string{"SWITCHYARD_DAPR_LISTEN_ADDRESSES": "127.0.0.1, ::1"}, func(t *testing.T, c *Config) {
			want := []string{"127.0.0.1:3500", "[::1]:3500"}
			if !reflect.DeepEqual(c.Listeners[0].Addresses, want) {
				t.Errorf("dapr_http addresses = %v, want %v", c.Listeners[0].Addresses, want)
			}
		}},
		{"resources path repeatable", []string{"--app-id", "orders", "--resources-path", res, "--resources-path", t.TempDir() + "," + t.TempDir()}, nil, func(t *testing.T, c *Config) {
			if len(c.ResourcesPath) != 3 || c.ResourcesPath[0] != res {
				t.Errorf("resources path = %v", c.ResourcesPath)
			}
		}},
		{"components-path alias", []string{"--app-id", "orders", "--components-path", res}, nil, func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(componentNames(c.Components), []string{"orderpubsub"}) {
				t.Errorf("components = %v", componentNames(c.Components))
			}
		}},
		{"bool and duration flags", []string{"--app-id", "orders", "--enable-metrics=false", "--log-as-json", "--app-health-timeout", "1m30s", "--dapr-graceful-shutdown-seconds", "2"}, nil, func(t *testing.T, c *Config) {
			if *c.EnableMetrics || !c.LogAsJSON || c.AppHealthTimeout.D() != 90*time.Second || c.GracefulShutdown.D() != 2*time.Second {
				t.Errorf("metrics %v, json %v, health timeout %v, shutdown %v", *c.EnableMetrics, c.LogAsJSON, c.AppHealthTimeout, c.GracefulShutdown)
			}
			for _, l := range c.Listeners {
				if l.Kind == ListenerMetrics {
					t.Errorf("metrics listener with metrics disabled: %+v", l)
				}
			}
		}},
		{"bool and duration from the environment", []string{"--app-id", "orders"}, map[string]string{"SWITCHYARD_ENABLE_METRICS": "false", "SWITCHYARD_APP_HEALTH_TIMEOUT": "5s", "SWITCHYARD_APP_MAX_CONCURRENCY": "-1"}, func(t *testing.T, c *Config) {
			if *c.EnableMetrics || c.AppHealthTimeout.D() != 5*time.Second || c.AppMaxConcurrency != 0 {
				t.Errorf("metrics %v, health timeout %v, concurrency %d", *c.EnableMetrics, c.AppHealthTimeout, c.AppMaxConcurrency)
			}
		}},
		{"dapr configuration", []string{"--app-id", "orders", "-c", filepath.Join(testdata, "dapr-config.yaml")}, nil, func(t *testing.T, c *Config) {
			if c.NameResolution.Scheme != "mdns" || !reflect.DeepEqual(c.NameResolution.Config, map[string]any{"selfRegister": true}) {
				t.Errorf("name resolution = %+v", c.NameResolution)
			}
			want := &AccessControl{DefaultAction: "deny", TrustDomain: "public", Policies: []ACLPolicy{
				{AppID: "checkout", DefaultAction: "allow", TrustDomain: "public", Namespace: "default",
					Operations: []ACLOperation{{Name: "/orders/*", HTTPVerb: []string{"POST", "GET"}, Action: "deny"}}},
				{AppID: "billing", TrustDomain: "public", Namespace: "default"},
			}}
			if !reflect.DeepEqual(c.AccessControl, want) {
				t.Errorf("access control = %+v, want %+v", c.AccessControl, want)
			}
			file := filepath.Join(testdata, "dapr-config.yaml")
			wantSkipped := []string{
				file + `: Configuration "appconfig": spec.features is not used`,
				file + `: Configuration "appconfig": spec.metric is not used`,
				file + `: Configuration "appconfig": spec.tracing is not used`,
			}
			if !reflect.DeepEqual(c.Skipped, wantSkipped) {
				t.Errorf("skipped = %q", c.Skipped)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tc.check(t, mustLoad(t, tc.args...))
		})
	}
}

// TestLoadZeroConfig: `switchyard --app-id orders --app-port 3000` gives
// daprd's defaults.
func TestLoadZeroConfig(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, "--app-id", "orders", "--app-port", "3000")
	type l struct{ name, kind, addr string }
	var got []l
	for _, x := range c.Listeners {
		want := []string{RouterFilter}
		if x.Kind == ListenerHTTP || x.Kind == ListenerGRPC {
			want = []string{"metrics", RouterFilter}
		}
		var names []string
		for _, f := range x.Filters {
			names = append(names, f.Name)
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("listener %s filters = %v, want %v", x.Name, names, want)
		}
		got = append(got, l{x.Name, x.Kind, strings.Join(x.Addresses, ",")})
	}
	want := []l{
		{"dapr_http", "http", ":3500"},
		{"dapr_grpc", "grpc", ":50001"},
		{"dapr_internal", "internal", ":0"},
		{"metrics", "metrics", "0.0.0.0:9090"},
		{"admin", "admin", "127.0.0.1:9901"},
		{"dapr_subscriptions", "subscription", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listeners:\n got %v\nwant %v", got, want)
	}
	if want := []Component{{Name: "pubsub", Type: "pubsub.in-memory", Version: "v1"}}; !reflect.DeepEqual(c.Components, want) {
		t.Errorf("components = %+v", c.Components)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"scheme", c.NameResolution.Scheme, "local"},
		{"namespace", c.Namespace, "default"},
		{"protocol", c.AppProtocol, "http"},
		{"channel", c.AppChannelAddress, "127.0.0.1"},
		{"concurrency", c.AppMaxConcurrency, 0},
		{"max request", c.DaprHTTPMaxRequestSize, 4},
		{"read buffer", c.DaprHTTPReadBufferSize, 4},
		{"shutdown", c.GracefulShutdown, Duration(5 * time.Second)},
		{"mode", c.Mode, "standalone"},
		{"log level", c.LogLevel, "info"},
		{"no clusters", len(c.Clusters), 0},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad env value names the variable", []string{"--app-id", "orders"}, map[string]string{"SWITCHYARD_APP_PORT": "abc"},
			`env SWITCHYARD_APP_PORT: app_port: invalid integer "abc"`},
		{"flag value out of range names the flag", []string{"--app-id", "orders", "--dapr-http-port", "70000"}, nil,
			`flag --dapr-http-port: dapr_http_port: port 70000 out of range (0-65535)`},
		{"colliding default listeners", []string{"--app-id", "orders", "--dapr-grpc-port", "3500"}, nil,
			`listener "dapr_grpc": ":3500" collides with listener "dapr_http" on port 3500`},
		{"unsupported mode", []string{"--app-id", "orders", "--mode", "kubernetes"}, nil,
			`flag --mode: mode: unsupported mode "kubernetes" (only standalone is supported)`},
		{"missing config file", []string{"--app-id", "orders", "-c", "/nonexistent/switchyard.yaml"}, nil,
			`config: open /nonexistent/switchyard.yaml: no such file or directory`},
		{"missing resources directory", []string{"--app-id", "orders", "--resources-path", "/nonexistent"}, nil,
			`config: resources path: open /nonexistent: no such file or directory`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := pflag.NewFlagSet("switchyard", pflag.ContinueOnError)
			BindFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			_, err := Load(fs)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error = %v, want %s", err, tc.want)
			}
		})
	}
}

func TestDefaultsMatchFlags(t *testing.T) {
	fs := pflag.NewFlagSet("switchyard", pflag.ContinueOnError)
	BindFlags(fs)
	d := Defaults()
	tests := []struct {
		flag string
		got  any
	}{
		{"dapr-http-port", d.DaprHTTPPort},
		{"dapr-grpc-port", d.DaprGRPCPort},
		{"metrics-port", d.MetricsPort},
		{"admin-port", d.AdminPort},
		{"app-protocol", d.AppProtocol},
		{"app-channel-address", d.AppChannelAddress},
		{"log-level", d.LogLevel},
		{"dapr-http-max-request-size", d.DaprHTTPMaxRequestSize},
		{"dapr-http-read-buffer-size", d.DaprHTTPReadBufferSize},
	}
	for _, tc := range tests {
		t.Run(tc.flag, func(t *testing.T) {
			f := fs.Lookup(tc.flag)
			if f == nil {
				t.Fatalf("flag --%s not registered", tc.flag)
			}
			if got := strings.TrimSpace(toText(tc.got)); got != f.DefValue {
				t.Errorf("Defaults() = %s, flag default = %s", got, f.DefValue)
			}
		})
	}
	if fs.ShorthandLookup("c") == nil || fs.ShorthandLookup("c").Name != "config" {
		t.Error("-c is not --config")
	}
}

func toText(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

func TestDropUnavailableDefaults(t *testing.T) {
	noSub := func(kind string) bool { return kind != ListenerSubscription }
	noMemory := func(typ string) bool { return typ != DefaultInMemoryType }
	all := func(string) bool { return true }

	t.Run("defaults adapt to the build", func(t *testing.T) {
		clearEnv(t)
		c := mustLoad(t, "--app-id", "orders")
		n := len(c.Listeners)
		dropped := c.DropUnavailableDefaults(noSub, noMemory)
		if want := []string{"listener " + DefaultSubName, "component " + DefaultPubSub}; !reflect.DeepEqual(dropped, want) {
			t.Errorf("dropped %v, want %v", dropped, want)
		}
		if len(c.Listeners) != n-1 {
			t.Errorf("%d listeners left of %d, want one fewer", len(c.Listeners), n)
		}
		for _, l := range c.Listeners {
			if l.Kind == ListenerSubscription {
				t.Errorf("subscription listener kept")
			}
		}
		if len(c.Components) != 0 {
			t.Errorf("components %v, want none", c.Components)
		}
	})
	t.Run("a full build keeps everything", func(t *testing.T) {
		clearEnv(t)
		c := mustLoad(t, "--app-id", "orders")
		n, m := len(c.Listeners), len(c.Components)
		if dropped := c.DropUnavailableDefaults(all, all); len(dropped) != 0 || len(c.Listeners) != n || len(c.Components) != m {
			t.Errorf("dropped %v; listeners %d->%d components %d->%d", dropped, n, len(c.Listeners), m, len(c.Components))
		}
	})
	t.Run("what a file names is never dropped", func(t *testing.T) {
		clearEnv(t)
		dir := t.TempDir()
		f := writeFile(t, dir, "c.yaml", "app_id: orders\nlisteners:\n  - name: subs\n    kind: subscription\n")
		res := filepath.Join(dir, "res")
		if err := os.MkdirAll(res, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, res, "pubsub.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n")
		c := mustLoad(t, "-c", f, "--resources-path", res)
		if dropped := c.DropUnavailableDefaults(noSub, noMemory); len(dropped) != 0 {
			t.Errorf("dropped configured items %v", dropped)
		}
		if len(c.Listeners) != 1 || len(c.Components) != 1 {
			t.Errorf("listeners %v components %v", c.Listeners, c.Components)
		}
	})
}
