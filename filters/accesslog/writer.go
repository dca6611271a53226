package accesslog

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// bufWriter collects lines in memory and writes them in large chunks: when
// the buffer is full, and from a background flusher at least every
// interval. Writes happen outside the lock that request goroutines take.
type bufWriter struct {
	mu    sync.Mutex
	buf   []byte
	limit int

	wmu   sync.Mutex // serialises writes to out; guards spare
	spare []byte
	out   io.Writer
	err   error // first write error

	dropped atomic.Uint64 // lines dropped because the output is too slow

	stop chan struct{}
	done chan struct{}
}

func newBufWriter(out io.Writer, size int, interval time.Duration) *bufWriter {
	w := &bufWriter{
		buf:   make([]byte, 0, size+size/4),
		spare: make([]byte, 0, size+size/4),
		limit: size,
		out:   out,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go w.flusher(interval)
	return w
}

func (w *bufWriter) flusher(interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.flush()
		case <-w.stop:
			return
		}
	}
}

// write appends one line; it never blocks on the output unless the buffer
// is full, and drops the line when the output has fallen far behind.
func (w *bufWriter) write(line []byte) {
	w.mu.Lock()
	if len(w.buf)+len(line) > 4*w.limit {
		w.mu.Unlock()
		w.dropped.Add(1)
		return
	}
	w.buf = append(w.buf, line...)
	full := len(w.buf) >= w.limit
	w.mu.Unlock()
	if full {
		w.flush()
	}
}

func (w *bufWriter) flush() {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	if len(b) > 0 {
		if _, err := w.out.Write(b); err != nil && w.err == nil {
			w.err = err
		}
	}
	w.spare = b[:0]
}

// close stops the flusher and writes what is left.
func (w *bufWriter) close() error {
	close(w.stop)
	<-w.done
	w.flush()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.err
}
