package filters_test

import (
	"bufio"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/filters/stats"

	_ "github.com/switchyard-proxy/switchyard/filters/accesslog"
	_ "github.com/switchyard-proxy/switchyard/filters/acl"
	_ "github.com/switchyard-proxy/switchyard/filters/apitoken"
	_ "github.com/switchyard-proxy/switchyard/filters/metrics"
	_ "github.com/switchyard-proxy/switchyard/filters/ratelimit"
	_ "github.com/switchyard-proxy/switchyard/filters/tracing"
)

// TestReadmeYAML parses every ```yaml block of every README.md in the module.
// In the README of a registered filter (filters/<name>/README.md), a block
// that is a filter spec (`name:` + `config:`) is decoded strictly into the
// filter's config, validated and built, and a block with `listeners:` has
// each of its registered filters built the same way; each such README must
// show at least one spec of its own filter. Other blocks only have to parse.
func TestReadmeYAML(t *testing.T) {
	root := moduleRoot(t)
	var readmes []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "vendor" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "README.md" {
			readmes = append(readmes, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(readmes) == 0 {
		t.Fatal("no README.md found under", root)
	}
	// Filters may open relative paths (accesslog): build them in a scratch directory.
	t.Chdir(t.TempDir())

	for _, path := range readmes {
		rel, _ := filepath.Rel(root, path)
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			blocks := yamlBlocks(t, path)
			own := ownFilter(rel)
			built := 0
			for i, b := range blocks {
				var parsed any
				if err := yaml.Unmarshal([]byte(b.text), &parsed); err != nil {
					t.Errorf("block %d (line %d): %v", i, b.line, err)
					continue
				}
				if own == "" {
					continue // outside a filter's folder the YAML only has to parse
				}
				doc, ok := parsed.(map[string]any)
				if !ok {
					t.Errorf("block %d (line %d): a filter README's YAML must be a mapping", i, b.line)
					continue
				}
				for _, spec := range specsIn(t, doc, b.line) {
					if _, ok := filters.Lookup(spec.Name); !ok {
						continue // e.g. the router, not imported here
					}
					buildSpec(t, spec, b.line)
					if spec.Name == own {
						built++
					}
				}
			}
			if own != "" && built == 0 {
				t.Errorf("README of filter %q shows no ```yaml spec of it", own)
			}
		})
	}
}

// ownFilter returns <name> for filters/<name>/README.md when <name> is a
// registered filter.
func ownFilter(rel string) string {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) != 3 || parts[0] != "filters" {
		return ""
	}
	if _, ok := filters.Lookup(parts[1]); !ok {
		return ""
	}
	return parts[1]
}

func specsIn(t *testing.T, doc map[string]any, line int) []config.FilterSpec {
	t.Helper()
	if _, ok := doc["name"]; ok {
		var s config.FilterSpec
		if err := config.DecodeStrict(doc, &s); err != nil {
			t.Errorf("block at line %d: not a filter spec: %v", line, err)
			return nil
		}
		return []config.FilterSpec{s}
	}
	if _, ok := doc["listeners"]; ok {
		var c struct {
			Listeners []config.Listener `json:"listeners"`
		}
		if err := config.DecodeStrict(map[string]any{"listeners": doc["listeners"]}, &c); err != nil {
			t.Errorf("block at line %d: listeners: %v", line, err)
			return nil
		}
		var out []config.FilterSpec
		for _, l := range c.Listeners {
			out = append(out, l.Filters...)
		}
		return out
	}
	return nil
}

func buildSpec(t *testing.T, spec config.FilterSpec, line int) {
	t.Helper()
	f, _ := filters.Lookup(spec.Name)
	cfg := f.NewConfig()
	if cfg != nil {
		if err := config.DecodeStrict(spec.Config, cfg); err != nil {
			t.Errorf("line %d: %s: decode: %v", line, spec.Name, err)
			return
		}
		if v, ok := cfg.(filters.Validator); ok {
			if err := v.Validate(); err != nil {
				t.Errorf("line %d: %s: validate: %v", line, spec.Name, err)
				return
			}
		}
	}
	t.Setenv("DAPR_API_TOKEN", "readme-test-token")
	env := filters.Env{Logger: zap.NewNop(), AppID: "readme", Namespace: "default", Listener: "readme", Metrics: stats.NewRegistry("dapr_")}
	flt, err := f.Build(cfg, env)
	if err != nil {
		t.Errorf("line %d: %s: build: %v", line, spec.Name, err)
		return
	}
	if c, ok := flt.(io.Closer); ok {
		if err := c.Close(); err != nil {
			t.Errorf("line %d: %s: close: %v", line, spec.Name, err)
		}
	}
}

type block struct {
	line int
	text string
}

func yamlBlocks(t *testing.T, path string) []block {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	var cur *strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && (trimmed == "```yaml" || trimmed == "```yml"):
			cur, start = &strings.Builder{}, n+1
		case cur != nil && trimmed == "```":
			out = append(out, block{line: start, text: cur.String()})
			cur = nil
		case cur != nil:
			cur.WriteString(line)
			cur.WriteByte('\n')
		}
	}
	if cur != nil {
		t.Errorf("%s: unterminated ```yaml block at line %d", path, start)
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}
