package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/filters"
	"github.com/switchyard-proxy/switchyard/internal/peerhttp"
)

// linkPeer is a raw peer of the multiplexed link on 127.0.0.1, written
// from the frame layout alone, that counts the requests it read; answer
// says what it does after reading one on the n-th connection (0-based).
type linkPeer struct {
	addr  string
	reqs  atomic.Int32
	conns atomic.Int32
}

type peerMove int

const (
	peerAnswer       peerMove = iota // answer with the link marker
	peerHangUp                       // close without a byte: the app may have seen it
	peerGoAway                       // GOAWAY naming no call taken, then close
	peerAnswerGoAway                 // answer, then GOAWAY naming that call, then close
)

func startLinkPeer(t *testing.T, answer func(conn int) peerMove) *linkPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &linkPeer{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(p.conns.Add(1)) - 1
			go p.serve(c, answer(n))
		}
	}()
	return p
}

func frame(id uint32, typ byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, id)
	return append(append(b, typ), payload...)
}

func (p *linkPeer) serve(c net.Conn, move peerMove) {
	defer c.Close()
	br := bufio.NewReader(c)
	pre := make([]byte, len(peerhttp.MuxPreface))
	if _, err := io.ReadFull(br, pre); err != nil || string(pre) != peerhttp.MuxPreface {
		return
	}
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		payload := make([]byte, binary.BigEndian.Uint32(hdr[:4]))
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		id := binary.BigEndian.Uint32(hdr[4:8])
		if hdr[8] != peerhttp.FrameRequest {
			continue
		}
		if _, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(payload))); err != nil {
			return
		}
		p.reqs.Add(1)
		answer := frame(id, peerhttp.FrameResponse, []byte("HTTP/1.1 200 OK\r\nSwitchyard-Link: 1\r\nContent-Length: 2\r\n\r\nok"))
		switch move {
		case peerHangUp:
			return
		case peerGoAway:
			_, _ = c.Write(frame(0, peerhttp.FrameGoAway, binary.BigEndian.AppendUint32(nil, id-1)))
			return
		case peerAnswerGoAway:
			_, _ = c.Write(answer)
			_, _ = c.Write(frame(0, peerhttp.FrameGoAway, binary.BigEndian.AppendUint32(nil, id)))
			return
		}
		_, _ = c.Write(answer)
	}
}

func linkOnly(t *testing.T, addr string) *Cluster {
	t.Helper()
	c, err := New(Options{AppID: "target", SelfAppID: "me", Endpoints: []string{addr}, Link: true, Backoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	(*c.eps.Load())[0].shared.linkOK.Store(true) // as if the peer had offered the link
	return c
}

func callOK(t *testing.T, c *Cluster, i int) {
	t.Helper()
	ex := exchange(false)
	defer filters.ReleaseExchange(ex)
	if err := c.Handle(context.Background(), ex); err != nil || ex.Resp.StatusCode() != 200 {
		t.Fatalf("call %d: %v %d", i, err, ex.Resp.StatusCode())
	}
}

func TestLinkRetries(t *testing.T) {
	t.Run("closed after the request was read: not repeated", func(t *testing.T) {
		p := startLinkPeer(t, func(int) peerMove { return peerHangUp })
		c := linkOnly(t, p.addr)
		ex := exchange(false)
		defer filters.ReleaseExchange(ex)
		if err := c.Handle(context.Background(), ex); err == nil {
			t.Fatal("a call the peer never answered worked")
		}
		if got := p.reqs.Load(); got != 1 {
			t.Fatalf("the peer read the request %d times; the app may have seen it, so once only", got)
		}
	})
	t.Run("not taken before a GOAWAY: sent again on a new connection", func(t *testing.T) {
		p := startLinkPeer(t, func(n int) peerMove {
			if n == 0 {
				return peerGoAway
			}
			return peerAnswer
		})
		c := linkOnly(t, p.addr)
		callOK(t, c, 0)
		if got, conns := p.reqs.Load(), p.conns.Load(); got != 2 || conns != 2 {
			t.Fatalf("the peer read %d requests on %d connections, want 2 on 2", got, conns)
		}
	})
	t.Run("a peer that closes after each answer (with GOAWAY): no call fails", func(t *testing.T) {
		p := startLinkPeer(t, func(int) peerMove { return peerAnswerGoAway })
		c := linkOnly(t, p.addr)
		for i := 0; i < 3; i++ {
			callOK(t, c, i)
		}
		if got := p.reqs.Load(); got != 3 {
			t.Fatalf("the peer read %d requests, want 3", got)
		}
	})
}
