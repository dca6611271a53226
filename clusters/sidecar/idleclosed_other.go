//go:build !unix

package sidecar

import "net"

// idleClosed cannot peek at a socket here: a kept-alive connection the peer
// closed fails its call, which the cluster retries by daprd's rules.
func idleClosed(net.Conn) bool { return false }
