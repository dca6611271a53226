package config

import (
	"reflect"
	"strings"
	"testing"
)

// validConfig is a small config that passes Validate; each case breaks it.
func validConfig() *Config {
	c := &Config{
		AppID: "orders", AppPort: 3000, DaprHTTPPort: 3500, DaprGRPCPort: 50001, MetricsPort: 9090, AdminPort: 9901,
		Listeners: []Listener{{Name: "api", Kind: ListenerHTTP, Addresses: []string{"127.0.0.1:3500"}}},
		Clusters: []Cluster{
			{Name: "billing", Kind: ClusterSidecar, AppID: "billing"},
			{Name: "reports", Kind: ClusterHTTP, Endpoints: []string{"10.0.0.7:8080"}},
		},
		Routes: []Route{
			{Name: "r0", Match: RouteMatch{Prefix: "/invoke/billing/"}, Cluster: "billing"},
			{Name: "r1", Match: RouteMatch{Glob: "/invoke/*/method/**"}, WeightedClusters: []WeightedCluster{{Name: "app", Weight: 1}, {Name: "reports", Weight: 2}}},
		},
		Subscriptions: []Subscription{{PubSub: "pubsub", Topic: "orders", Rules: []SubscriptionRule{{Match: "true", Path: "/orders"}}}},
		AccessControl: &AccessControl{Policies: []ACLPolicy{{AppID: "checkout", TrustDomain: "public", Namespace: "default",
			Operations: []ACLOperation{{Name: "/orders", HTTPVerb: []string{"post", "*"}, Action: "Allow"}}}}},
	}
	c.ApplyDefaults()
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // nil: valid
	}{
		{"valid", func(c *Config) {}, nil},
		{"route to the local app needs no cluster", func(c *Config) { c.Clusters = nil; c.Routes = []Route{{Cluster: "app"}} }, nil},
		{"route without a cluster keeps the default target", func(c *Config) { c.Routes = []Route{{Match: RouteMatch{Prefix: "/invoke/"}, Timeout: Duration(1)}} }, nil},
		{"cluster and weighted clusters", func(c *Config) { c.Routes[0].WeightedClusters = []WeightedCluster{{Name: "app", Weight: 1}} }, []string{
			"routes[0]: set cluster or weighted_clusters, not both",
		}},
		{"negative timeouts", func(c *Config) {
			c.Routes[0].Timeout = -1
			c.Clusters[1].ConnectTimeout = -1
			c.Clusters[1].PipelineStall = -1
			c.GracefulShutdown = -1
			c.AppPipelineStall = -1
			ka := Duration(-1)
			c.PeerKeepalive = &ka
		}, []string{
			"dapr_graceful_shutdown_seconds: must not be negative",
			"peer_keepalive: must not be negative",
			"app_pipeline_stall_after: must not be negative",
			"clusters[1].pipeline_stall_after: must not be negative",
			"clusters[1].connect_timeout: must not be negative",
			"routes[0].timeout: must not be negative",
		}},
		{"cluster shapes", func(c *Config) {
			c.Clusters = append(c.Clusters,
				Cluster{Name: "x", Kind: "tcp", LBPolicy: "maglev"},
				Cluster{Name: "y", Kind: ClusterSidecar, LBPolicy: DefaultLBPolicy},
				Cluster{Kind: ClusterGRPCApp, Endpoints: []string{"h:1"}, AppID: "z", LBPolicy: DefaultLBPolicy, MaxConcurrency: -1})
		}, []string{
			`clusters[2].kind: unknown cluster kind "tcp" (want http, grpc, sidecar)`,
			`clusters[2].lb_policy: unknown policy "maglev" (want round_robin, least_request, random)`,
			`clusters[3].app_id: required for a sidecar cluster`,
			`clusters[4].name: required`,
			`clusters[4].app_id: only for sidecar clusters`,
			`clusters[4].max_concurrency: must not be negative`,
		}},
		{"listener shapes", func(c *Config) {
			c.Listeners = append(c.Listeners, Listener{Kind: ListenerGRPC, Addresses: []string{"127.0.0.1:0", "127.0.0.1:0"},
				Filters: []FilterSpec{{Name: RouterFilter}, {Name: ""}}})
		}, []string{
			"listeners[1].name: required",
			"listeners[1].filters[0]: the router must be the last filter",
			"listeners[1].filters[1].name: required",
		}},
		{"same port on different hosts is fine", func(c *Config) {
			c.Listeners = append(c.Listeners, Listener{Name: "v6", Kind: ListenerHTTP, Addresses: []string{"[::1]:3500"}})
		}, nil},
		{"wildcard collides with any host", func(c *Config) {
			c.Listeners = append(c.Listeners, Listener{Name: "all", Kind: ListenerGRPC, Addresses: []string{"[::]:3500"}})
		}, []string{`listeners[1].addresses[0]: "[::]:3500" collides with listener "api" on port 3500`}},
		{"name resolution scheme", func(c *Config) { c.NameResolution.Scheme = "My Scheme" }, []string{
			`name_resolution.scheme: invalid scheme "My Scheme"`,
		}},
		{"subscription rules", func(c *Config) { c.Subscriptions[0].Rules = []SubscriptionRule{{}} }, []string{
			"subscriptions[0].rules[0].match: required",
			"subscriptions[0].rules[0].path: required",
		}},
		{"component from a dapr file speaks dapr's names", func(c *Config) {
			c.Components = append(c.Components, Component{Name: "kafka", Type: "bindings.kafka", File: "res/kafka.yaml"})
		}, []string{
			`res/kafka.yaml: Component "kafka": spec.type: "bindings.kafka" is not a supported component type (want pubsub.<kind>, e.g. pubsub.redis)`,
		}},
		{"subscription from a dapr file speaks dapr's names", func(c *Config) {
			c.Subscriptions = []Subscription{{Name: "s", PubSub: "nope", Topic: "t", Route: "/t", File: "res/sub.yaml"}}
		}, []string{
			`res/sub.yaml: Subscription "s": spec.pubsubname: component "nope" is not defined`,
		}},
		{"access control", func(c *Config) {
			c.AccessControl.DefaultAction = "block"
			c.AccessControl.Policies = append(c.AccessControl.Policies, ACLPolicy{DefaultAction: "nope", Operations: []ACLOperation{{HTTPVerb: []string{"FETCH"}}}})
		}, []string{
			`access_control.default_action: unknown action "block" (want allow or deny)`,
			"access_control.policies[1].app_id: required",
			"access_control.policies[1].trust_domain: required",
			"access_control.policies[1].namespace: required",
			`access_control.policies[1].default_action: unknown action "nope" (want allow or deny)`,
			"access_control.policies[1].operations[0].name: required",
			`access_control.policies[1].operations[0].action: unknown action "" (want allow or deny)`,
			`access_control.policies[1].operations[0].http_verb[0]: unknown verb "FETCH"`,
		}},
		{"settings", func(c *Config) {
			c.AppID = ""
			c.AppPort = -1
			c.DaprListenAddresses = []string{"127.0.0.1:3500"}
			c.AppChannelAddress = ""
		}, []string{
			"app_id: required (--app-id, SWITCHYARD_APP_ID or app_id in a config file)",
			"app_port: port -1 out of range (0-65535)",
			"app_channel_address: required",
			`dapr_listen_addresses[0]: "127.0.0.1:3500": want a host or IP without a port`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(c)
			err := c.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tc.want, "\n      "))
			}
		})
	}
}

func TestApplyDefaults(t *testing.T) {
	yes := true
	tests := []struct {
		name  string
		in    Config
		check func(t *testing.T, c *Config)
	}{
		{"listeners given are kept", Config{Listeners: []Listener{{Name: "only", Kind: ListenerHTTP, Addresses: []string{":1"}}}}, func(t *testing.T, c *Config) {
			if len(c.Listeners) != 1 || c.Listeners[0].Filters != nil {
				t.Errorf("listeners = %+v", c.Listeners)
			}
		}},
		{"listen addresses for both APIs", Config{DaprListenAddresses: []string{"127.0.0.1", "::1"}, DaprHTTPPort: 1, DaprGRPCPort: 2, EnableMetrics: &yes, MetricsPort: 3, AdminPort: 4}, func(t *testing.T, c *Config) {
			want := [][]string{{"127.0.0.1:1", "[::1]:1"}, {"127.0.0.1:2", "[::1]:2"}, {":0"}, {"0.0.0.0:3"}, {"127.0.0.1:4"}, nil}
			var got [][]string
			for _, l := range c.Listeners {
				got = append(got, l.Addresses)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("addresses = %v, want %v", got, want)
			}
		}},
		{"a pubsub component suppresses the in-memory one", Config{Components: []Component{{Name: "ps", Type: "pubsub.redis"}}}, func(t *testing.T, c *Config) {
			if len(c.Components) != 1 {
				t.Errorf("components = %+v", c.Components)
			}
		}},
		{"access control: policies without a default deny", Config{AccessControl: &AccessControl{Policies: []ACLPolicy{{AppID: "a"}}}}, func(t *testing.T, c *Config) {
			if c.AccessControl.DefaultAction != ActionDeny || c.AccessControl.TrustDomain != DefaultTrustDomain {
				t.Errorf("access control = %+v", c.AccessControl)
			}
		}},
		{"access control: no policies allow", Config{AccessControl: &AccessControl{TrustDomain: "td"}}, func(t *testing.T, c *Config) {
			if c.AccessControl.DefaultAction != ActionAllow {
				t.Errorf("access control = %+v", c.AccessControl)
			}
		}},
		{"access control: an empty section is none", Config{AccessControl: &AccessControl{}}, func(t *testing.T, c *Config) {
			if c.AccessControl != nil {
				t.Errorf("access control = %+v", c.AccessControl)
			}
		}},
		{"namespace from NAMESPACE", Config{}, func(t *testing.T, c *Config) {
			if c.Namespace != "from-env" {
				t.Errorf("namespace = %q", c.Namespace)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvNamespace, "from-env")
			c := tc.in
			c.ApplyDefaults()
			tc.check(t, &c)
		})
	}
}

func TestDefaultsValidate(t *testing.T) {
	c := Defaults()
	c.AppID = "orders"
	if err := c.Validate(); err != nil {
		t.Errorf("Defaults() with an app id does not validate: %v", err)
	}
}
