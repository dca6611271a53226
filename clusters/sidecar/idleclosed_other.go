//go:build !unix

package sidecar

import "net"

func socketOf(net.Conn) int { return -1 }

// idleClosed cannot peek at a socket here: a kept-alive connection the peer
// closed fails its call, which the cluster retries by daprd's rules.
func idleClosed(int) bool { return false }
