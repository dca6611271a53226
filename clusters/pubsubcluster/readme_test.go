package pubsubcluster_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/switchyard-proxy/switchyard/clusters"
	"github.com/switchyard-proxy/switchyard/config"
)

// TestREADMEComponent loads the README's Component as daprd's resources
// are loaded and builds it.
func TestREADMEComponent(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(b, -1)
	if len(blocks) == 0 {
		t.Fatal("no yaml block")
	}
	dir := t.TempDir()
	for i, blk := range blocks {
		if err := os.WriteFile(filepath.Join(dir, "c"+string(rune('a'+i))+".yaml"), blk[1], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	comps, _, _, err := config.LoadResources([]string{dir}, "checkout")
	if err != nil || len(comps) != 1 {
		t.Fatalf("components %v, err %v", comps, err)
	}
	m := clusters.NewManager(nil, 0)
	defer m.Close()
	plan, err := m.Prepare(context.Background(), &config.Config{AppID: "checkout", Components: comps}, clusters.Env{AppID: "checkout"})
	if err != nil {
		t.Fatal(err)
	}
	plan.Abort()
}
