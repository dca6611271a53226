// Package procs sizes the Go scheduler to the sidecar's load. A proxy hands
// each request between goroutines (a connection's reader, a worker, a
// writer) and, with a P idle, the runtime wakes another thread to look for
// work at a hand-off. On one P the hand-off stays on the thread that
// made it. So the sidecar starts on one P and takes more, up to what Go would
// give it (the CPUs, or the cgroup's CPU limit), while the ones it has stay
// busy, and gives them back when the load falls.
package procs

import (
	"context"
	"runtime"
	"syscall"
	"time"
)

// Tuning of Start.
const (
	// Window is how often the load is measured.
	Window = 500 * time.Millisecond
	// Grow: one window in which the process used at least this share of
	// its Ps' time adds Ps (the count doubles, up to the limit).
	Grow = 0.85
	// Shrink: CalmWindows windows in a row in which the process used no
	// more than this share of one P fewer take one away.
	Shrink      = 0.6
	CalmWindows = 8
)

// Policy decides the P count from the load measured over each window.
type Policy struct {
	Min, Max int
	calm     int
}

// Next returns the P count for the next window, given the current count n
// and the CPU the process used over the last one, in cores (CPU time over
// wall time).
func (p *Policy) Next(n int, cores float64) int {
	if n < p.Min {
		return p.Min
	}
	if n > p.Max {
		return p.Max
	}
	if cores >= Grow*float64(n) && n < p.Max {
		p.calm = 0
		return min(2*n, p.Max)
	}
	if n > p.Min && cores <= Shrink*float64(n-1) {
		p.calm++
		if p.calm >= CalmWindows {
			p.calm = 0
			return n - 1
		}
		return n
	}
	p.calm = 0
	return n
}

// CPUTime is the CPU time (user and system) the process has used.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Start sets GOMAXPROCS to pol.Min and, when pol.Max is above it, adjusts
// it every window on a goroutine of its own until ctx ends; changed, when
// set, hears of each change.
func Start(ctx context.Context, pol Policy, window time.Duration, changed func(from, to int, cores float64)) {
	runtime.GOMAXPROCS(pol.Min)
	if pol.Max > pol.Min {
		go run(ctx, pol, window, changed)
	}
}

func run(ctx context.Context, pol Policy, window time.Duration, changed func(from, to int, cores float64)) {
	n := pol.Min
	t := time.NewTicker(window)
	defer t.Stop()
	last, lastCPU := time.Now(), CPUTime()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cpu := CPUTime()
			cores := float64(cpu-lastCPU) / float64(now.Sub(last))
			last, lastCPU = now, cpu
			if m := pol.Next(n, cores); m != n {
				runtime.GOMAXPROCS(m)
				if changed != nil {
					changed(n, m, cores)
				}
				n = m
			}
		}
	}
}
