package subscription

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/config"
)

// TestREADME loads the README's Subscription file as resources are loaded
// and compiles its routes; the listener entry must name this kind.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(b, -1)
	if len(blocks) != 2 {
		t.Fatalf("want 2 yaml blocks, got %d", len(blocks))
	}
	if !strings.Contains(string(blocks[0][1]), "kind: "+Kind) {
		t.Error("the listener entry does not use this kind")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sub.yaml"), blocks[1][1], 0o644); err != nil {
		t.Fatal(err)
	}
	_, subs, _, err := config.LoadResources([]string{dir}, "checkout")
	if err != nil || len(subs) != 1 {
		t.Fatalf("subscriptions %v, err %v", subs, err)
	}
	rs, err := compileRoutes(subs[0].Route, subs[0].Rules)
	if err != nil {
		t.Fatal(err)
	}
	if p := rs.pick(map[string]any{"type": "order.big"}); string(p) != "/orders/big" {
		t.Errorf("rule picked %s", p)
	}
	if p := rs.pick(map[string]any{"type": "x", "data": map[string]any{"amount": 5.0}}); string(p) != "/orders" {
		t.Errorf("default picked %s", p)
	}
}
