package rawio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

// pair returns a connected TCP pair over loopback: the dialed end wrapped,
// and the accepted end as accepted by a wrapped listener.
func pair(t testing.TB) (dialed, accepted net.Conn) { return pairOf(t, true) }

// pairOf is pair with both ends plain net.Conns unless wrap.
func pairOf(t testing.TB, wrap bool) (dialed, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if wrap {
		ln = rawio.Listener(ln)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { d.Close(); r.c.Close() })
	if !wrap {
		return d, r.c
	}
	return rawio.Wrap(d), r.c
}

func TestWrapTypes(t *testing.T) {
	d, a := pair(t)
	if _, ok := d.(*rawio.Conn); !ok {
		t.Fatalf("Wrap of a TCP conn gave %T", d)
	}
	if _, ok := a.(*rawio.Conn); !ok {
		t.Fatalf("the listener accepted a %T", a)
	}
	if rawio.Wrap(d) != d {
		t.Fatal("wrapping twice made a second layer")
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if rawio.Wrap(p1) != p1 {
		t.Fatal("a conn without a socket was wrapped")
	}
	if _, err := d.(syscall.Conn).SyscallConn(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g, err := rawio.DialContext(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, ok := g.(*rawio.Conn); !ok {
		t.Fatalf("DialContext gave a %T", g)
	}
	if _, err := rawio.DialContext(context.Background(), "127.0.0.1:1"); err == nil {
		t.Fatal("dialing a closed port succeeded")
	}
}

// TestLargeTransfer sends more than the sockets buffer both ways at once,
// so writes find the socket full and wait in the netpoller, and reads come
// in pieces of every size.
func TestLargeTransfer(t *testing.T) {
	d, a := pair(t)
	const size = 8 << 20
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i*7 + i>>11)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, c := range []net.Conn{d, a} {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a lost byte fails, not hangs
		wg.Add(2)
		go func() {
			defer wg.Done()
			// Writes of odd sizes, one of them larger than the buffers.
			for off, step := 0, 1; off < size; step = step*3 + 1 {
				end := min(off+step, size)
				n, err := c.Write(src[off:end])
				if err != nil || n != end-off {
					errs <- fmt.Errorf("wrote %d of %d: %v", n, end-off, err)
					return
				}
				off = end
			}
		}()
		go func() {
			defer wg.Done()
			got := make([]byte, 0, size)
			buf := make([]byte, 70000)
			for i := 0; len(got) < size; i++ {
				n, err := c.Read(buf[:1+i%len(buf)])
				if err != nil {
					errs <- err
					return
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, src) {
				errs <- errors.New("the bytes read differ from those written")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestReadDeadline(t *testing.T) {
	d, _ := pair(t)
	_ = d.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	n, err := d.Read(make([]byte, 10))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v; want a deadline error", n, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a net.Error timeout", err)
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Fatalf("returned after %v, before the deadline", time.Since(start))
	}
}

func TestWriteDeadline(t *testing.T) {
	d, _ := pair(t) // the other end never reads
	_ = d.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	big := make([]byte, 64<<20)
	n, err := d.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write: %v; want a deadline error", err)
	}
	if n <= 0 || n >= len(big) {
		t.Fatalf("wrote %d of %d before the deadline", n, len(big))
	}
}

func TestEOFAndReset(t *testing.T) {
	d, a := pair(t)
	if _, err := a.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	got, err := io.ReadAll(d)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want the bytes then EOF", got, err)
	}
	if n, err := d.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
	// The peer is gone: writes fail with the socket's error, as a
	// *net.OpError, and the connection can be closed.
	var werr error
	for range 100 {
		if _, werr = d.Write([]byte("x")); werr != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var oe *net.OpError
	if !errors.As(werr, &oe) || oe.Op != "write" ||
		!(errors.Is(werr, syscall.EPIPE) || errors.Is(werr, syscall.ECONNRESET)) {
		t.Fatalf("write to a closed peer: %v", werr)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseWakesRead(t *testing.T) {
	d, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := d.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = d.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed conn: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the read")
	}
	if _, err := d.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed conn: %v", err)
	}
}

func TestEmpty(t *testing.T) {
	d, _ := pair(t)
	if n, err := d.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if n, err := d.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
}

// BenchmarkPingPong: one byte each way over loopback, the wrapped conn
// against the plain one.
func BenchmarkPingPong(b *testing.B) {
	for _, wrap := range []bool{false, true} {
		name := "net"
		if wrap {
			name = "rawio"
		}
		b.Run(name, func(b *testing.B) {
			d, a := pairOf(b, wrap)
			go func() {
				buf := make([]byte, 1)
				for {
					if _, err := a.Read(buf); err != nil {
						return
					}
					if _, err := a.Write(buf); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 1)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := d.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
