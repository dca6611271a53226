package main_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStandardBuildPrunesMethods links the binary as `make build` does and
// fails when a reachable function makes the linker keep every exported
// method of every type (a symbol marked <ReflectMethod> by -dumpdep:
// reflect's Method or MethodByName with a name not known at compile time).
// That happened through grpc-go's golang.org/x/net/trace (its templates;
// the grpcnotrace tag leaves it out) and through protobuf-go before
// v1.36.12 with Go 1.26: it made the binary a third larger and the idle
// sidecar 3.5 MiB larger in memory.
func TestStandardBuildPrunesMethods(t *testing.T) {
	if testing.Short() {
		t.Skip("links the whole binary")
	}
	// The flags of the Makefile's build target.
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags=-dumpdep",
		"-o", filepath.Join(t.TempDir(), "switchyard"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	deps, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Each line is "from -> to", in the order the linker reached symbols.
	parent := map[string]string{}
	var culprits []string
	var other []string
	sc := bufio.NewScanner(deps)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		from, to, ok := strings.Cut(sc.Text(), " -> ")
		if !ok {
			if len(other) < 20 {
				other = append(other, sc.Text())
			}
			continue
		}
		from, _, _ = strings.Cut(from, " <")
		to, flags, _ := strings.Cut(to, " <")
		if _, seen := parent[to]; !seen {
			parent[to] = from
			if strings.Contains(flags, "ReflectMethod") {
				culprits = append(culprits, to)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go build: %v\n%s", err, strings.Join(other, "\n"))
	}
	if len(parent) == 0 {
		t.Fatal("the linker printed no dependencies (-ldflags=-dumpdep)")
	}
	if len(culprits) > 0 {
		// The first one reached is the cause; the others are methods kept
		// because of it.
		c := culprits[0]
		chain := []string{c}
		for s := parent[c]; s != "" && s != "_" && len(chain) < 40; s = parent[s] {
			chain = append(chain, s)
		}
		t.Errorf("%s makes the linker keep every exported method (%d such symbols reached); reached from:\n\t%s\n"+
			"(a method reached from its type is kept because some interface, or a reflect MethodByName with a constant, names it)",
			c, len(culprits), strings.Join(chain[1:], "\n\t"))
	}
}
