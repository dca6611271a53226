package h2proxy

import "golang.org/x/net/http2/hpack"

// The calls a connection carries repeat their header fields (method,
// content type, the app id, the same statuses back), and once those sit in
// HPACK's dynamic table each is sent as a one-byte index. hpack.Encoder
// finds that index with two map lookups that hash the name and the value;
// encCache remembers, per kind of header block, the byte each field got last
// time and sends it again without the encoder while no insertion into the
// table has moved the indexes since.

// encCache is a connection's cache (under wmu).
type encCache struct {
	epoch uint32 // bumped by every change of the dynamic table's indexes
	slots [4]encSlot
	next  int
}

// encSlot is one kind of block, named by its first field's name (":method"
// for requests, ":status" for answers, "grpc-status" for trailers).
type encSlot struct {
	first  string
	fields []cachedField
}

type cachedField struct {
	f     hpack.HeaderField
	b     byte   // the field's one-byte indexed representation
	epoch uint32 // the table's epoch when b was right
	ok    bool   // b is set
}

func (e *encCache) slot(first string) *encSlot {
	for i := range e.slots {
		if e.slots[i].first == first && e.slots[i].fields != nil {
			return &e.slots[i]
		}
	}
	s := &e.slots[e.next]
	e.next = (e.next + 1) % len(e.slots)
	s.first = first
	s.fields = s.fields[:0]
	if s.fields == nil {
		s.fields = make([]cachedField, 0, 12)
	}
	return s
}

// encodeLocked HPACK-encodes fields into c.hbuf (under wmu).
func (c *Conn) encodeLocked(fields []hpack.HeaderField) {
	c.hbuf.Reset()
	if len(fields) == 0 {
		return
	}
	e := &c.ecache
	s := e.slot(fields[0].Name)
	for i, f := range fields {
		if i < len(s.fields) {
			if cf := &s.fields[i]; cf.ok && cf.epoch == e.epoch && cf.f == f {
				c.hbuf.WriteByte(cf.b)
				continue
			}
		}
		start := c.hbuf.Len()
		_ = c.henc.WriteField(f)
		out := c.hbuf.Bytes()[start:]
		if len(out) > 0 && (out[0]&0xc0 == 0x40 || out[0]&0xe0 == 0x20) {
			// A literal added to the table, or a table size update: every
			// dynamic index moved.
			e.epoch++
		}
		cf := cachedField{f: f, epoch: e.epoch, ok: len(out) == 1 && out[0]&0x80 != 0}
		if len(out) == 1 {
			cf.b = out[0]
		}
		if i < len(s.fields) {
			s.fields[i] = cf
		} else {
			s.fields = append(s.fields, cf)
		}
	}
	if len(s.fields) > len(fields) {
		clear(s.fields[len(fields):])
		s.fields = s.fields[:len(fields)]
	}
}
