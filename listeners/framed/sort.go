package framed

import (
	"bufio"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/internal/grpcwire"
	"github.com/switchyard-proxy/switchyard/listeners"
)

// A connection whose first call the listener does not take (a Dapr SDK's
// connection to the Dapr API, CallLocal between sidecars) goes to the
// grpc-go server whole, so those calls do not pay for a second hop through
// the frame server. sort reads up to the first HEADERS frame to decide; a
// client that waits for the server's SETTINGS before its first call (grpc-go
// does) gets an empty SETTINGS frame, which changes nothing, so the server
// that takes the connection sends its own as if it were the first. Every
// byte read is handed on with the connection. A later call on a connection
// that went to the frame server is still bridged to grpc-go if not taken.

var emptySettings = []byte{0, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0}

// recorder keeps every byte read through it.
type recorder struct {
	r   io.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

// sort decides where nc goes and serves it there.
func (s *Server) sort(nc net.Conn) {
	s.mu.Lock()
	s.sorting[nc] = struct{}{}
	s.mu.Unlock()
	_ = nc.SetReadDeadline(time.Now().Add(sortWait))
	take := s.firstTaken(nc)
	_ = nc.SetReadDeadline(time.Time{})
	pc := &listeners.PrefixConn{Conn: nc, Head: take.head}
	// From the sorting set to the served set in one step, so that Close
	// finds the connection in one of them.
	s.mu.Lock()
	delete(s.sorting, nc)
	if s.isClosed() {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	if take.frames {
		s.serveFramesLocked(pc)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.inproc.Push(pc)
}

// sortWait is how long a new connection may go without a call before it is
// handed to grpc-go, which waits for it as it waits for any connection.
const sortWait = 2 * time.Minute

type sorted struct {
	head   []byte
	frames bool
}

// firstTaken reads nc up to its first call's header block and reports
// whether the listener takes that call. Anything unexpected leaves the
// connection to grpc-go, which answers it as it always has.
func (s *Server) firstTaken(nc net.Conn) sorted {
	rec := &recorder{r: nc}
	br := bufio.NewReaderSize(rec, 4096)
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, pre); err != nil || string(pre) != http2.ClientPreface {
		return sorted{head: rec.buf}
	}
	if _, err := nc.Write(emptySettings); err != nil {
		return sorted{head: rec.buf}
	}
	fr := http2.NewFramer(nil, br)
	fr.SetMaxReadFrameSize(16384)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return sorted{head: rec.buf}
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			var path, appID string
			for _, hf := range h.Fields {
				switch hf.Name {
				case ":path":
					path = hf.Value
				case grpcwire.MDAppID:
					appID = hf.Value
				}
			}
			return sorted{head: rec.buf, frames: s.take(path, appID)}
		}
	}
}
