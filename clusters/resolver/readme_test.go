package resolver_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/consul"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/dns"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/local"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/mdns"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/static"
)

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestReadmeExamples parses the name_resolution example of every scheme's
// README and validates it with that scheme's builder.
func TestReadmeExamples(t *testing.T) {
	readmes, err := filepath.Glob("*/README.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(readmes) < 5 {
		t.Fatalf("found %d scheme READMEs, want at least 5", len(readmes))
	}
	for _, path := range readmes {
		scheme := filepath.Dir(path)
		t.Run(scheme, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			examples := 0
			for _, m := range yamlBlock.FindAllSubmatch(b, -1) {
				var doc struct {
					NameResolution *struct {
						Scheme string         `yaml:"scheme"`
						Config map[string]any `yaml:"config"`
					} `yaml:"name_resolution"`
				}
				if err := yaml.Unmarshal(m[1], &doc); err != nil {
					t.Fatalf("%s: yaml: %v", path, err)
				}
				if doc.NameResolution == nil {
					continue
				}
				examples++
				nr := doc.NameResolution
				if nr.Scheme != scheme {
					t.Fatalf("%s: example scheme %q, want %q", path, nr.Scheme, scheme)
				}
				bld, ok := resolver.Get(nr.Scheme)
				if !ok {
					t.Fatalf("%s: scheme %q not registered", path, nr.Scheme)
				}
				v, ok := bld.(resolver.ConfigValidator)
				if !ok {
					t.Fatalf("scheme %q does not validate config", nr.Scheme)
				}
				if err := v.ValidateConfig(nr.Config); err != nil {
					t.Fatalf("%s: example config: %v", path, err)
				}
			}
			if examples == 0 {
				t.Fatalf("%s has no ```yaml example with name_resolution:", path)
			}
		})
	}
}

func TestSchemes(t *testing.T) {
	want := []string{"consul", "dns", "local", "mdns", "static"}
	got := resolver.Schemes()
	for _, s := range want {
		found := false
		for _, g := range got {
			found = found || g == s
		}
		if !found {
			t.Fatalf("scheme %q not registered (have %v)", s, got)
		}
	}
}
