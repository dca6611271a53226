//go:build linux

package codepages

import (
	"bytes"
	"os"
	"strconv"
	"testing"
)

// residentCode returns the resident kB of the executable's code mapping.
func residentCode(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in, kb := false, -1
	for _, line := range bytes.Split(smaps, []byte{'\n'}) {
		if _, _, ok := codeMapping(line, exe); ok {
			in = true
			continue
		}
		if in && bytes.HasPrefix(line, []byte("Rss:")) {
			f := bytes.Fields(line)
			kb, _ = strconv.Atoi(string(f[1]))
			break
		}
	}
	if kb < 0 {
		t.Fatal("no code mapping of the executable in /proc/self/smaps")
	}
	return kb
}

func TestRelease(t *testing.T) {
	before := residentCode(t)
	n, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no code mapping released")
	}
	after := residentCode(t)
	// Reading smaps maps some code back; most of what the test binary
	// touched to start stays released.
	if after*10 > before*9 {
		t.Fatalf("resident code %d kB before, %d kB after: not released", before, after)
	}
	// The code still runs: what is called again is mapped back.
	if got := strconv.Itoa(42) + string(bytes.ToUpper([]byte("ok"))); got != "42OK" {
		t.Fatalf("got %q", got)
	}
	t.Logf("resident code %d kB -> %d kB (%d kB of address space)", before, after, n>>10)
}

func TestCodeMapping(t *testing.T) {
	for _, c := range []struct {
		line string
		ok   bool
	}{
		{"00400000-00c62000 r-xp 00000000 fe:00 9994558    /bin/sy", true},
		{"00c62000-01679000 r--p 00862000 fe:00 9994558    /bin/sy", false}, // read-only data: not code
		{"01679000-01748000 rw-p 01279000 fe:00 9994558    /bin/sy", false},
		{"7f00-7f10 r-xp 00000000 fe:00 1    /lib/other.so", false},
		{"00400000-00c62000 r-xp 00000000 fe:00 9994558    /bin/sy (deleted)", false},
		{"garbage", false},
	} {
		_, _, ok := codeMapping([]byte(c.line), "/bin/sy")
		if ok != c.ok {
			t.Errorf("%q: %v, want %v", c.line, ok, c.ok)
		}
	}
}
