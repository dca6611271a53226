package sidecar

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/filters"
)

// linkPeer is a raw HTTP/1.1 peer on 127.0.0.1 that counts the requests it
// read; answer says what it does after reading one on the n-th connection
// (0-based): true answers with the link marker, false closes the
// connection without a byte. closeAfter closes it after each answer.
type linkPeer struct {
	addr   string
	reqs   atomic.Int32
	conns  atomic.Int32
	closed chan struct{} // a connection was closed after an answer
}

func startLinkPeer(t *testing.T, answer func(conn int) bool, closeAfter bool) *linkPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &linkPeer{addr: ln.Addr().String(), closed: make(chan struct{}, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(p.conns.Add(1)) - 1
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					p.reqs.Add(1)
					if !answer(n) {
						return // closed before answering: the app may have seen it
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nSwitchyard-Link: 1\r\nContent-Length: 2\r\n\r\nok")
					if closeAfter {
						c.Close() // an idle keep-alive connection the peer drops
						p.closed <- struct{}{}
						return
					}
				}
			}()
		}
	}()
	return p
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

func TestLinkRetries(t *testing.T) {
	t.Run("closed after the request was read: not repeated", func(t *testing.T) {
		p := startLinkPeer(t, func(int) bool { return false }, false)
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
	t.Run("kept-alive connection the peer dropped while idle: the call goes on a new one", func(t *testing.T) {
		p := startLinkPeer(t, func(int) bool { return true }, true)
		c := linkOnly(t, p.addr)
		for i := 0; i < 3; i++ {
			ex := exchange(false)
			if err := c.Handle(context.Background(), ex); err != nil || ex.Resp.StatusCode() != 200 {
				t.Fatalf("call %d: %v %d", i, err, ex.Resp.StatusCode())
			}
			filters.ReleaseExchange(ex)
			<-p.closed
		}
		if got := p.reqs.Load(); got != 3 {
			t.Fatalf("the peer read %d requests, want 3", got)
		}
	})
}
