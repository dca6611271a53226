package procs

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPolicy(t *testing.T) {
	steps := []struct {
		n     int
		cores float64
		want  int
	}{
		{1, 0.30, 1}, // light load stays on one P
		{1, 0.84, 1}, // just under Grow
		{1, 0.90, 2}, // busy: doubles
		{2, 1.80, 4}, // still busy
		{4, 3.50, 6}, // capped at Max
		{6, 5.50, 6}, // at Max nothing more
		{6, 2.00, 6}, // calm window 1 of CalmWindows...
		{6, 2.00, 6}, // 2
		{6, 4.00, 6}, // busy again: the calm count starts over
		{7, 1.00, 6}, // above Max comes back to it
		{0, 0.00, 1}, // below Min comes back to it
		{2, 0.59, 2}, // calm 1
		{2, 0.10, 2}, // 2
		{2, 0.20, 2}, // 3
		{2, 0.50, 2}, // 4
		{2, 0.40, 2}, // 5
		{2, 0.30, 2}, // 6
		{2, 0.20, 2}, // 7
		{2, 0.60, 1}, // 8: one P fewer
		{1, 0.00, 1}, // never below Min
		{2, 0.61, 2}, // above Shrink of one P fewer: stays
	}
	p := Policy{Min: 1, Max: 6}
	for i, s := range steps {
		if got := p.Next(s.n, s.cores); got != s.want {
			t.Fatalf("step %d: Next(%d, %.2f) = %d, want %d", i, s.n, s.cores, got, s.want)
		}
	}
}

func TestCPUTime(t *testing.T) {
	a := CPUTime()
	deadline := time.Now().Add(50 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	b := CPUTime()
	if b-a < 20*time.Millisecond {
		t.Fatalf("50 ms of spinning counted as %v of CPU (%d)", b-a, x)
	}
}

// TestStart drives the real scheduler: two spinning goroutines make the one
// P busy, so Start adds one; when they stop, it gives it back.
func TestStart(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var changes [][2]int
	Start(ctx, Policy{Min: 1, Max: 2}, 20*time.Millisecond, func(from, to int, _ float64) {
		mu.Lock()
		changes = append(changes, [2]int{from, to})
		mu.Unlock()
	})
	waitFor := func(want int) {
		t.Helper()
		for start := time.Now(); runtime.GOMAXPROCS(0) != want; time.Sleep(5 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("GOMAXPROCS stayed %d, want %d", runtime.GOMAXPROCS(0), want)
			}
		}
	}
	time.Sleep(50 * time.Millisecond)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("idle: GOMAXPROCS %d, want 1", got)
	}
	var stop atomic.Bool
	var spun sync.WaitGroup
	for range 2 {
		spun.Add(1)
		go func() {
			defer spun.Done()
			for !stop.Load() {
				runtime.Gosched()
			}
		}()
	}
	waitFor(2)
	stop.Store(true)
	spun.Wait()
	waitFor(1)
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if len(changes) < 2 || changes[0] != [2]int{1, 2} || changes[len(changes)-1] != [2]int{2, 1} {
		t.Fatalf("changes %v, want 1→2 first and 2→1 last", changes)
	}
}
