package acl

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"
)

var ok = filters.HandlerFunc(func(context.Context, *filters.Exchange) error { return nil })

func build(t testing.TB, y string, reg *stats.Registry) filters.Handler {
	t.Helper()
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(y), &raw); err != nil {
		t.Fatal(err)
	}
	fac := factory{}
	cfg := fac.NewConfig()
	if err := config.DecodeStrict(raw, cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.(*Config).Validate(); err != nil {
		t.Fatal(err)
	}
	flt, err := fac.Build(cfg, filters.Env{AppID: "orders", Namespace: "prod", Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return flt.Wrap(ok)
}

const policies = `
default_action: deny
trust_domain: public
policies:
  - app_id: checkout
    default_action: deny
    trust_domain: public
    namespace: prod
    operations:
      - name: /orders/*
        http_verb: [POST, GET]
        action: allow
      - name: /orders/*
        http_verb: [DELETE]
        action: deny
      - name: /admin/**
        http_verb: ["*"]
        action: allow
      - name: /Reports
        http_verb: [GET]
        action: allow
      - name: /items/v*/list
        http_verb: ["*"]
        action: allow
  - app_id: frontend
    trust_domain: public
    namespace: prod
    operations:
      - name: /status
        http_verb: [GET]
        action: allow
  - app_id: backoffice
    default_action: allow
    trust_domain: corp
    namespace: prod
`

type call struct {
	proto     filters.Protocol
	kind      filters.Kind
	peer      string
	caller    string
	callerNS  string
	method    string
	verb      string
	wantAllow bool
}

func TestDecisions(t *testing.T) {
	spiffe := func(app string) string { return "spiffe://public/ns/prod/" + app }
	in := filters.ProtocolInternal
	tests := []struct {
		name  string
		cfg   string
		calls []call
	}{
		{
			name: "operations and verbs",
			cfg:  policies,
			calls: []call{
				{proto: in, peer: spiffe("checkout"), method: "orders/42", verb: "POST", wantAllow: true},
				{proto: in, peer: spiffe("checkout"), method: "orders/42", verb: "GET", wantAllow: true},
				{proto: in, peer: spiffe("checkout"), method: "orders/42", verb: "PUT"},                      // verb not listed: policy default deny
				{proto: in, peer: spiffe("checkout"), method: "orders/42", verb: "DELETE"},                   // the first rule for /orders/* wins (daprd keeps the first)
				{proto: in, peer: spiffe("checkout"), method: "orders/42/lines", verb: "GET"},                // /* is one final segment
				{proto: in, peer: spiffe("checkout"), method: "admin/a/b/c", verb: "PATCH", wantAllow: true}, // /** is the rest, * any verb
				{proto: in, peer: spiffe("checkout"), method: "REPORTS", verb: "GET", wantAllow: true},       // lower-cased for HTTP apps
				{proto: in, peer: spiffe("checkout"), method: "reports/2024", verb: "GET", wantAllow: true},  // daprd's trie answers a prefix
				{proto: in, peer: spiffe("checkout"), method: "items/v2/list", verb: "GET", wantAllow: true},
				{proto: in, peer: spiffe("checkout"), method: "items/x2/list", verb: "GET"},
				{proto: in, peer: spiffe("checkout"), method: "unknown", verb: "GET"},
				{proto: in, peer: "spiffe://public/ns/staging/checkout", method: "orders/1", verb: "GET"}, // other namespace: global deny
				{proto: in, peer: spiffe("frontend"), method: "status", verb: "GET", wantAllow: true},
				{proto: in, peer: spiffe("frontend"), method: "other", verb: "GET"}, // no policy default: global deny
				{proto: in, peer: "spiffe://corp/ns/prod/backoffice", method: "anything", verb: "PUT", wantAllow: true},
				{proto: in, peer: "spiffe://public/ns/prod/backoffice", method: "anything", verb: "PUT"}, // trust domain differs
				{proto: in, peer: "not-a-spiffe-id", method: "orders/1", verb: "GET"},
				{proto: in, method: "orders/1", verb: "GET"},                     // no identity: global deny
				{proto: in, caller: "checkout", method: "orders/1", verb: "GET"}, // header not trusted by default
			},
		},
		{
			name: "only internal invocations are checked by default",
			cfg:  policies,
			calls: []call{
				{proto: filters.ProtocolHTTP, method: "orders/1", verb: "GET", wantAllow: true},
				{proto: filters.ProtocolGRPC, method: "orders/1", verb: "GET", wantAllow: true},
				{proto: in, kind: filters.KindPublish, wantAllow: true},
			},
		},
		{
			name: "all listeners",
			cfg:  policies + "all_listeners: true\n",
			calls: []call{
				{proto: filters.ProtocolHTTP, method: "orders/1", verb: "GET"},
				{proto: filters.ProtocolHTTP, peer: spiffe("checkout"), method: "orders/1", verb: "GET", wantAllow: true},
			},
		},
		{
			name: "trusted caller header",
			cfg:  policies + "trust_caller_header: true\n",
			calls: []call{
				{proto: in, caller: "checkout", callerNS: "prod", method: "orders/1", verb: "GET", wantAllow: true},
				{proto: in, caller: "checkout", method: "orders/1", verb: "GET", wantAllow: true}, // namespace defaults to ours (prod)
				{proto: in, caller: "checkout", callerNS: "dev", method: "orders/1", verb: "GET"},
				{proto: in, caller: "backoffice", method: "x", verb: "GET"},                                // corp trust domain needs mTLS
				{proto: in, peer: spiffe("frontend"), caller: "checkout", method: "orders/1", verb: "GET"}, // mTLS identity wins
			},
		},
		{
			name: "grpc app: exact case, verbs ignored",
			cfg:  policies + "app_protocol: grpc\n",
			calls: []call{
				{proto: in, peer: spiffe("checkout"), method: "orders/1", verb: "PUT", wantAllow: true},
				{proto: in, peer: spiffe("checkout"), method: "REPORTS", verb: "GET"},
				{proto: in, peer: spiffe("checkout"), method: "Reports", verb: "GET", wantAllow: true},
			},
		},
		{
			name:  "empty spec allows everything",
			cfg:   "{}",
			calls: []call{{proto: in, method: "x", verb: "GET", wantAllow: true}},
		},
		{
			name:  "no default, no policies key: deny",
			cfg:   "trust_domain: public",
			calls: []call{{proto: in, method: "x", verb: "GET"}},
		},
		{
			name:  "no default, empty policies: allow",
			cfg:   "trust_domain: public\npolicies: []",
			calls: []call{{proto: in, method: "x", verb: "GET", wantAllow: true}},
		},
		{
			name: "global allow with an app default deny",
			cfg: `default_action: Allow
policies:
  - {app_id: checkout, default_action: deny, trust_domain: public, namespace: prod}`,
			calls: []call{
				{proto: in, peer: spiffe("frontend"), method: "x", verb: "GET", wantAllow: true},
				{proto: in, peer: spiffe("checkout"), method: "x", verb: "GET"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := build(t, tt.cfg, nil)
			for i, c := range tt.calls {
				err := run(h, c)
				if got := err == nil; got != c.wantAllow {
					t.Errorf("call %d %+v: allowed = %v (err %v), want %v", i, c, got, err, c.wantAllow)
				}
				if err == nil {
					continue
				}
				var fe *filters.Error
				if !errors.As(err, &fe) || fe.Code != filters.ErrCodePermissionDenied || fe.HTTPStatus != http.StatusForbidden || fe.GRPCCode != codes.PermissionDenied {
					t.Errorf("call %d: error %#v", i, err)
				}
				if !strings.HasPrefix(fe.Message, "acl: access control policy has denied access") {
					t.Errorf("call %d: message %q", i, fe.Message)
				}
			}
		})
	}
}

func run(h filters.Handler, c call) error {
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = c.proto
	if c.kind == filters.KindPublish {
		ex.SetPublish(false, []byte("pubsub"), []byte("t"))
	} else {
		ex.SetInvoke([]byte("orders"), []byte(c.method))
	}
	ex.PeerID = []byte(c.peer)
	ex.CallerAppID = []byte(c.caller)
	ex.CallerNamespace = []byte(c.callerNS)
	if c.verb != "" {
		ex.Req.Header.SetMethod(c.verb)
	}
	return h.Handle(context.Background(), ex)
}

func TestMessage(t *testing.T) {
	h := build(t, policies, nil)
	err := run(h, call{proto: filters.ProtocolInternal, peer: "spiffe://public/ns/prod/checkout", method: "orders/1", verb: "PUT"})
	want := "acl: access control policy has denied access to id: spiffe://public/ns/prod/checkout operation: orders/1 verb: PUT"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

func TestMetrics(t *testing.T) {
	reg := stats.NewRegistry("dapr_")
	h := build(t, policies, reg)
	p := func(app string) string { return "spiffe://public/ns/prod/" + app }
	in := filters.ProtocolInternal
	for _, c := range []call{
		{proto: in, peer: p("checkout"), method: "orders/1", verb: "GET"}, // app allowed
		{proto: in, peer: p("checkout"), method: "nope", verb: "GET"},     // app blocked
		{proto: in, peer: p("frontend"), method: "status", verb: "GET"},   // frontend has no default: counted as global, allowed
		{proto: in, peer: p("stranger"), method: "x", verb: "GET"},        // global blocked, no policy
	} {
		_ = run(h, c)
	}
	var buf bytes.Buffer
	if err := reg.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		`dapr_runtime_acl_app_policy_action_allowed_total{app_id="checkout",trustDomain="public",namespace="prod"} 1`,
		`dapr_runtime_acl_app_policy_action_blocked_total{app_id="checkout",trustDomain="public",namespace="prod"} 1`,
		`dapr_runtime_acl_global_policy_action_allowed_total{app_id="frontend",trustDomain="public",namespace="prod"} 1`,
		`dapr_runtime_acl_global_policy_action_blocked_total{app_id="",trustDomain="",namespace=""} 1`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
}

func TestTrie(t *testing.T) {
	tests := []struct {
		rules []string
		op    string
		want  string // the rule that answers, "" for none
	}{
		{[]string{"/a/*"}, "/a/b", "/a/*"},
		{[]string{"/a/*"}, "/a/b/c", ""},
		{[]string{"/a/*"}, "/a", "/a/*"}, // daprd: a path ending at /a falls back to its /* rule
		{[]string{"/a/**"}, "/a/b/c", "/a/**"},
		{[]string{"/a/*/c"}, "/a/b/c", ""}, // daprd: /* only ever matches a final segment
		{[]string{"/a/b*/c"}, "/a/bx/c", "/a/b*/c"},
		{[]string{"/a/b*/c"}, "/a/bx/d", ""},
		{[]string{"/a/b*"}, "/a/bcd", "/a/b*"},
		{[]string{"/a/*d"}, "/a/bcd", "/a/*d"},
		{[]string{"/a/b*d"}, "/a/bxxd", "/a/b*d"},
		{[]string{"/a/b*d"}, "/a/bxx", ""},
		{[]string{"/a"}, "/a/b", "/a"},
		{[]string{"/a/b", "/a/*"}, "/a/b", "/a/b"},
		{[]string{"/a/*", "/a/b"}, "/a/b", "/a/*"},
		{[]string{"/"}, "/", "/"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.rules, ",")+" "+tt.op, func(t *testing.T) {
			root := &trieNode{seg: "/"}
			ops := map[*operation]string{}
			for _, r := range tt.rules {
				o := &operation{}
				ops[o] = r
				root.put(r, o)
			}
			got := ops[root.search([]byte(tt.op))]
			if got != tt.want {
				t.Fatalf("search(%s) = %q, want %q", tt.op, got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
		want string
	}{
		{name: "bad default", cfg: "default_action: maybe", want: "default_action"},
		{name: "missing namespace", cfg: "policies: [{app_id: a, trust_domain: public}]", want: "namespace is required"},
		{name: "missing trust domain", cfg: "policies: [{app_id: a, namespace: prod}]", want: "trust_domain is required"},
		{name: "missing app id", cfg: "policies: [{trust_domain: public, namespace: prod}]", want: "app_id is required"},
		{name: "bad operation action", cfg: "policies: [{app_id: a, trust_domain: t, namespace: n, operations: [{name: /x}]}]", want: "action must be"},
		{name: "bad protocol", cfg: "app_protocol: thrift", want: "app_protocol"},
		{name: "unknown key", cfg: "defaultAction: allow", want: "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw map[string]any
			if err := yaml.Unmarshal([]byte(tt.cfg), &raw); err != nil {
				t.Fatal(err)
			}
			cfg := &Config{}
			err := config.DecodeStrict(raw, cfg)
			if err == nil {
				err = cfg.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestAllocs(t *testing.T) {
	h := build(t, policies+"trust_caller_header: true\n", stats.NewRegistry("dapr_"))
	for _, c := range []call{
		{proto: filters.ProtocolInternal, peer: "spiffe://public/ns/prod/checkout", method: "Admin/a/b", verb: "GET"},
		{proto: filters.ProtocolInternal, caller: "checkout", callerNS: "prod", method: "orders/42", verb: "POST"},
		{proto: filters.ProtocolHTTP, method: "anything", verb: "GET"},
	} {
		ex := filters.AcquireExchange(true)
		ex.Protocol = c.proto
		ex.SetInvoke([]byte("orders"), []byte(c.method))
		ex.PeerID = []byte(c.peer)
		ex.CallerAppID = []byte(c.caller)
		ex.CallerNamespace = []byte(c.callerNS)
		ex.Req.Header.SetMethod(c.verb)
		ctx := context.Background()
		if n := testing.AllocsPerRun(1000, func() {
			if err := h.Handle(ctx, ex); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%+v: %v allocations per request, want 0", c, n)
		}
		filters.ReleaseExchange(ex)
	}
}

func BenchmarkHandle(b *testing.B) {
	h := build(b, policies, stats.NewRegistry("dapr_"))
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.Protocol = filters.ProtocolInternal
	ex.SetInvoke([]byte("orders"), []byte("items/v2/list"))
	ex.PeerID = []byte("spiffe://public/ns/prod/checkout")
	ex.Req.Header.SetMethod("GET")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Handle(ctx, ex); err != nil {
			b.Fatal(err)
		}
	}
}
