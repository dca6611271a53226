package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadResourcesSamples(t *testing.T) {
	dir := filepath.Join(testdata, "resources")
	tests := []struct {
		name      string
		appID     string
		wantComps []Component
		wantSubs  []string
	}{
		{"scoped to orders", "orders", []Component{{
			Name: "orderpubsub", Type: "pubsub.redis", Version: "v1",
			Metadata:    map[string]string{"redisHost": "localhost:6379", "redisDB": "0", "enableTLS": "false", "maxRetryBackoff": "2.5"},
			Scopes:      []string{"orders", "checkout"},
			InitTimeout: Duration(10 * time.Second), IgnoreErrors: true,
			File: filepath.Join(dir, "pubsub.yaml"),
		}}, []string{"neworders", "shipments"}},
		{"scoped to billing", "billing", []Component{{
			Name: "billingpubsub", Type: "pubsub.redis", Version: "v1",
			Metadata: map[string]string{"redisHost": "localhost:6379"},
			Scopes:   []string{"billing"},
			File:     filepath.Join(dir, "pubsub.yaml"),
		}}, []string{"shipments"}},
		{"an app no scope names", "nobody", nil, []string{"shipments"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			comps, subs, skipped, err := LoadResources([]string{dir}, tc.appID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(comps, tc.wantComps) {
				t.Errorf("components:\n got %+v\nwant %+v", comps, tc.wantComps)
			}
			var names []string
			for _, s := range subs {
				names = append(names, s.Name)
			}
			if !reflect.DeepEqual(names, tc.wantSubs) {
				t.Errorf("subscriptions = %v, want %v", names, tc.wantSubs)
			}
			wantSkipped := []string{filepath.Join(dir, "resiliency.yaml") + `: Resiliency "myresiliency" is not used`}
			if !reflect.DeepEqual(skipped, wantSkipped) {
				t.Errorf("skipped = %q, want %q", skipped, wantSkipped)
			}
		})
	}
}

func TestLoadResourcesSubscriptions(t *testing.T) {
	dir := filepath.Join(testdata, "resources")
	_, subs, _, err := LoadResources([]string{dir}, "orders")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "subscriptions.yaml")
	want := []Subscription{
		{Name: "neworders", PubSub: "orderpubsub", Topic: "orders", Route: "/orders", DeadLetterTopic: "orders-dead",
			Metadata: map[string]string{"rawPayload": "true"}, Scopes: []string{"orders"}, File: file},
		{Name: "shipments", PubSub: "orderpubsub", Topic: "shipments", Route: "/shipments",
			Rules: []SubscriptionRule{{Match: `event.type == "shipment.express"`, Path: "/shipments/express"}}, File: file},
	}
	if !reflect.DeepEqual(subs, want) {
		t.Errorf("subscriptions:\n got %+v\nwant %+v", subs, want)
	}
}

func TestLoadResourcesFiles(t *testing.T) {
	const comp = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ps\nspec:\n  type: pubsub.redis\n  version: v1\n"
	tests := []struct {
		name    string
		body    string
		wantErr string // {file} is the file's path
		check   func(t *testing.T, comps []Component, subs []Subscription, skipped []string)
	}{
		{name: "several documents and empty ones", body: "---\n" + comp + "---\n" + strings.Replace(comp, "name: ps", "name: ps2", 1) + "---\n",
			check: func(t *testing.T, comps []Component, _ []Subscription, _ []string) {
				if got := componentNames(comps); !reflect.DeepEqual(got, []string{"ps", "ps2"}) {
					t.Errorf("components = %v", got)
				}
			}},
		{name: "structured metadata value becomes JSON", body: comp + "  metadata:\n    - name: hosts\n      value: [a, b]\n    - name: empty\n",
			check: func(t *testing.T, comps []Component, _ []Subscription, _ []string) {
				if want := map[string]string{"hosts": `["a","b"]`, "empty": ""}; !reflect.DeepEqual(comps[0].Metadata, want) {
					t.Errorf("metadata = %v, want %v", comps[0].Metadata, want)
				}
			}},
		{name: "not a dapr resource is skipped", body: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
			check: func(t *testing.T, comps []Component, _ []Subscription, skipped []string) {
				if len(comps) != 0 || len(skipped) != 1 || !strings.HasSuffix(skipped[0], `document 1 (apiVersion "v1", kind ConfigMap) is not a Dapr resource`) {
					t.Errorf("components %v, skipped %q", comps, skipped)
				}
			}},
		{name: "other dapr kinds are skipped", body: "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: ext\n",
			check: func(t *testing.T, _ []Component, _ []Subscription, skipped []string) {
				if len(skipped) != 1 || !strings.HasSuffix(skipped[0], `: HTTPEndpoint "ext" is not used`) {
					t.Errorf("skipped = %q", skipped)
				}
			}},
		{name: "secret key ref", body: comp + "  metadata:\n    - name: password\n      secretKeyRef:\n        name: s\n        key: k\n",
			wantErr: `{file}: Component "ps": spec.metadata[0] (password): secretKeyRef: secret stores are not supported yet`},
		{name: "env ref", body: comp + "  metadata:\n    - name: password\n      envRef: PASSWORD\n",
			wantErr: `{file}: Component "ps": spec.metadata[0] (password): envRef is not supported yet`},
		{name: "duplicate metadata", body: comp + "  metadata:\n    - name: a\n      value: 1\n    - name: a\n      value: 2\n",
			wantErr: `{file}: Component "ps": spec.metadata[1].name: duplicate "a"`},
		{name: "component api version", body: strings.Replace(comp, "v1alpha1", "v2alpha1", 1),
			wantErr: `{file}: Component "ps": apiVersion: unsupported "dapr.io/v2alpha1" for kind Component (want dapr.io/v1alpha1)`},
		{name: "component without a name", body: strings.Replace(comp, "name: ps", "name: \"\"", 1),
			wantErr: `{file}: Component "": metadata.name: required`},
		{name: "subscription api version", body: "apiVersion: dapr.io/v3\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  topic: t\n",
			wantErr: `{file}: Subscription "s": apiVersion: unsupported "dapr.io/v3" for kind Subscription (want dapr.io/v1alpha1 or dapr.io/v2alpha1)`},
		{name: "wrong type in spec", body: comp + "  ignoreErrors: maybe\n",
			wantErr: `{file}: Component "ps": line 8: cannot unmarshal !!str ` + "`maybe`" + ` into bool`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := writeFile(t, dir, "res.yaml", tc.body)
			writeFile(t, dir, "notes.txt", "not yaml: [")
			comps, subs, skipped, err := LoadResources([]string{dir}, "orders")
			if tc.wantErr != "" {
				want := strings.ReplaceAll(tc.wantErr, "{file}", file)
				if err == nil || err.Error() != want {
					t.Fatalf("error = %v\nwant %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, comps, subs, skipped)
		})
	}
}
