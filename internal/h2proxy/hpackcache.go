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

// The decoding side: once a caller's or an app's fields sit in the table,
// its header blocks repeat byte for byte: indexes into the tables (method,
// content type, the app id; status, then the trailers) and the literals an
// encoder never adds to the table (nghttp2 sends :path so). A block made
// only of those leaves the dynamic table as it was (RFC 7541 6.1, 6.2.2,
// 6.2.3), so what it decodes to depends only on its bytes and the table:
// decCache remembers the fields of such blocks while no other block (which
// may add to the table or resize it) has been read since.

// decCache is a connection's cache (its reader only).
type decCache struct {
	epoch uint32 // bumped before every block that may change the table
	slots [4]decSlot
	next  int
}

type decSlot struct {
	block  []byte
	fields []hpack.HeaderField
	epoch  uint32
	ok     bool
}

// maxCachedBlock bounds the blocks decCache keeps.
const maxCachedBlock = 512

// keepsTable reports a header block, at most maxCachedBlock bytes, of
// indexed fields and literals not added to the table only. A block that
// would not decode may pass: it is kept only once it decoded.
func keepsTable(b []byte) bool {
	if len(b) == 0 || len(b) > maxCachedBlock {
		return false
	}
	for len(b) > 0 {
		x := b[0]
		var ok bool
		switch {
		case x&0x80 != 0: // indexed field
			_, b, ok = hpackInt(b, 7)
		case x&0xc0 == 0x40, x&0xe0 == 0x20: // added to the table; table size update
			return false
		default: // literal without indexing (0000) or never indexed (0001)
			var name uint64
			if name, b, ok = hpackInt(b, 4); ok && name == 0 {
				b, ok = skipString(b)
			}
			if ok {
				b, ok = skipString(b)
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// hpackInt reads an integer with an n-bit prefix (RFC 7541 5.1).
func hpackInt(b []byte, n uint) (uint64, []byte, bool) {
	mask := uint64(1)<<n - 1
	v := uint64(b[0]) & mask
	if v < mask {
		return v, b[1:], true
	}
	var m uint
	for i := 1; i < len(b) && i <= 4; i++ {
		v += uint64(b[i]&0x7f) << m
		m += 7
		if b[i]&0x80 == 0 {
			return v, b[i+1:], true
		}
	}
	return 0, nil, false
}

// skipString steps over a string literal (RFC 7541 5.2).
func skipString(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	n, rest, ok := hpackInt(b, 7)
	if !ok || n > uint64(len(rest)) {
		return nil, false
	}
	return rest[n:], true
}

// get returns the fields block decoded to, if it was decoded since the
// table last changed. They are the cache's: the caller copies them.
func (d *decCache) get(block []byte) ([]hpack.HeaderField, bool) {
	for i := range d.slots {
		s := &d.slots[i]
		if s.ok && s.epoch == d.epoch && string(s.block) == string(block) {
			return s.fields, true
		}
	}
	return nil, false
}

// put remembers what block (keepsTable) decoded to.
func (d *decCache) put(block []byte, fields []hpack.HeaderField) {
	s := &d.slots[d.next]
	d.next = (d.next + 1) % len(d.slots)
	s.block = append(s.block[:0], block...)
	s.fields = append(s.fields[:0], fields...)
	s.epoch, s.ok = d.epoch, true
}
