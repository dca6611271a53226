package pubsub_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/jetstream"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/memory"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/redis"
)

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestReadmeComponents parses the Component YAML of every broker README and
// checks that its type is registered and its metadata valid.
func TestReadmeComponents(t *testing.T) {
	tests := []struct {
		dir, typ string
	}{
		{"memory", "pubsub.in-memory"},
		{"redis", "pubsub.redis"},
		{"jetstream", "pubsub.jetstream"},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(tc.dir, "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			blocks := yamlBlock.FindAllSubmatch(b, -1)
			if len(blocks) == 0 {
				t.Fatal("no yaml block")
			}
			for _, blk := range blocks {
				var c struct {
					APIVersion string `yaml:"apiVersion"`
					Kind       string `yaml:"kind"`
					Spec       struct {
						Type     string `yaml:"type"`
						Metadata []struct {
							Name  string `yaml:"name"`
							Value string `yaml:"value"`
						} `yaml:"metadata"`
					} `yaml:"spec"`
				}
				if err := yaml.Unmarshal(blk[1], &c); err != nil {
					t.Fatalf("yaml: %v", err)
				}
				if c.APIVersion != "dapr.io/v1alpha1" || c.Kind != "Component" || c.Spec.Type != tc.typ {
					t.Fatalf("component header %+v", c)
				}
				f, ok := pubsub.Get(c.Spec.Type)
				if !ok {
					t.Fatalf("%s not registered", c.Spec.Type)
				}
				md := map[string]string{}
				for _, m := range c.Spec.Metadata {
					md[m.Name] = m.Value
				}
				if err := f.(pubsub.MetadataValidator).ValidateMetadata(md); err != nil {
					t.Errorf("README metadata invalid: %v", err)
				}
			}
		})
	}
	want := []string{"pubsub.in-memory", "pubsub.jetstream", "pubsub.redis"}
	got := pubsub.Types()
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("%s not in Types() %v", w, got)
		}
	}
}
