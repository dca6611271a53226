package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestReadme keeps README.md honest: its YAML example loads, and its flag
// table lists every flag with its environment variable and default.
func TestReadme(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)

	t.Run("yaml example loads", func(t *testing.T) {
		m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(readme)
		if m == nil {
			t.Fatal("no yaml block in README.md")
		}
		p := filepath.Join(t.TempDir(), "readme.yaml")
		if err := os.WriteFile(p, []byte(m[1]), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadFile(p); err != nil {
			t.Errorf("README example: %v", err)
		}
	})

	fs := pflag.NewFlagSet("switchyard", pflag.ContinueOnError)
	BindFlags(fs)
	rows := map[string]string{}
	for _, line := range strings.Split(readme, "\n") {
		if m := regexp.MustCompile("^\\| `--([a-z-]+)`").FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	for _, s := range settings {
		if s.flag == "" {
			continue
		}
		t.Run(s.flag, func(t *testing.T) {
			row, ok := rows[s.flag]
			if !ok {
				t.Fatalf("--%s is not in the README's flag table", s.flag)
			}
			if !strings.Contains(row, "`"+s.envName()+"`") {
				t.Errorf("row for --%s does not name %s", s.flag, s.envName())
			}
			def := fs.Lookup(s.flag).DefValue
			if def != "" && def != "[]" && !strings.Contains(row, "`"+def+"`") {
				t.Errorf("row for --%s does not give the default `%s`: %s", s.flag, def, row)
			}
		})
	}
}
