package config

import "sync/atomic"

// Snapshot is one immutable, validated configuration. The running proxy only
// ever swaps one whole snapshot for another.
type Snapshot struct {
	Version uint64
	Source  string // file path, "flags" or "xds"
	Config  *Config
}

var versions atomic.Uint64

// NewSnapshot wraps a validated config in a snapshot with the next version.
// The config must not be changed afterwards.
func NewSnapshot(c *Config, source string) *Snapshot {
	return &Snapshot{Version: versions.Add(1), Source: source, Config: c}
}
