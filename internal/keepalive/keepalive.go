// Package keepalive is the rule by which switchyard's connections to peer
// sidecars (the peer link, gRPC proxying's HTTP/2) find a peer that stopped
// answering without closing the connection: checked every period, a
// connection whose calls wait while nothing was read from the peer since the
// last check sends a PING, and one that read nothing since that PING either
// is given up. A peer is so given up 2 to 3 periods after its last frame.
package keepalive

// Action is what a check asks of its connection.
type Action int

const (
	None   Action = iota
	Ping          // send a PING
	GiveUp        // fail the connection and its calls
)

// Check is one connection's keepalive state, for the one goroutine that
// runs its checks.
type Check struct {
	heard  uint64
	pinged bool
}

// Step runs one check: reads counts what the connection has read so far
// (frames or batches of them), waiting whether calls wait on it (and the
// peer may be PINGed).
func (k *Check) Step(reads uint64, waiting bool) Action {
	switch {
	case reads != k.heard:
		k.heard, k.pinged = reads, false
		return None
	case k.pinged:
		return GiveUp
	case waiting:
		k.pinged = true
		return Ping
	}
	return None
}
