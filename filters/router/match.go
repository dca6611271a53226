package router

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"github.com/switchyard-proxy/switchyard/config"
)

// keyMatcher matches the logical route key. Compiled once per snapshot.
type keyMatcher interface {
	match(key []byte) bool
}

type anyKey struct{}

func (anyKey) match([]byte) bool { return true }

type exactKey []byte

func (m exactKey) match(k []byte) bool { return bytes.Equal(k, m) }

type prefixKey []byte

func (m prefixKey) match(k []byte) bool { return bytes.HasPrefix(k, m) }

type regexKey struct{ re *regexp.Regexp }

func (m regexKey) match(k []byte) bool { return m.re.Match(k) }

// globKey matches '/'-separated segments: '*' inside a segment matches any
// run of non-'/' bytes, a segment of exactly '**' matches any number of
// segments (zero or more).
type globKey struct{ segs [][]byte }

func (m globKey) match(k []byte) bool { return globSegs(m.segs, k) }

func globSegs(segs [][]byte, k []byte) bool {
	for i, s := range segs {
		if len(s) == 2 && s[0] == '*' && s[1] == '*' {
			rest := segs[i+1:]
			if len(rest) == 0 {
				return true
			}
			// try every split point at a segment boundary
			for {
				if globSegs(rest, k) {
					return true
				}
				j := bytes.IndexByte(k, '/')
				if j < 0 {
					return false
				}
				k = k[j+1:]
			}
		}
		var seg []byte
		j := bytes.IndexByte(k, '/')
		last := i == len(segs)-1
		if j < 0 {
			seg, k = k, nil
			if !last {
				return false
			}
		} else {
			if last {
				return false
			}
			seg, k = k[:j], k[j+1:]
		}
		if !globSeg(s, seg) {
			return false
		}
	}
	return true
}

// globSeg matches one segment with '*' wildcards, no backtracking blow-up
// (greedy with one saved star position).
func globSeg(p, s []byte) bool {
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func compileKey(m config.RouteMatch) (keyMatcher, error) {
	n := 0
	for _, s := range []string{m.Exact, m.Prefix, m.Glob, m.Regex} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return nil, fmt.Errorf("set only one of exact, prefix, glob, regex")
	}
	switch {
	case m.Exact != "":
		return exactKey(m.Exact), nil
	case m.Prefix != "":
		return prefixKey(m.Prefix), nil
	case m.Glob != "":
		g := strings.TrimPrefix(m.Glob, "/")
		var segs [][]byte
		for _, s := range strings.Split(g, "/") {
			segs = append(segs, []byte(s))
		}
		// keys start with '/', globs are matched against the key without it
		return globPrefixed{globKey{segs}}, nil
	case m.Regex != "":
		re, err := regexp.Compile(m.Regex)
		if err != nil {
			return nil, fmt.Errorf("regex: %w", err)
		}
		return regexKey{re}, nil
	}
	return anyKey{}, nil
}

type globPrefixed struct{ g globKey }

func (m globPrefixed) match(k []byte) bool {
	if len(k) > 0 && k[0] == '/' {
		k = k[1:]
	}
	return m.g.match(k)
}

// headerMatcher matches one request header.
type headerMatcher struct {
	name    string
	exact   []byte
	prefix  []byte
	re      *regexp.Regexp
	present bool // with no value matcher: must (or must not) be present
	invert  bool
}

type headerGetter interface {
	Peek(key string) []byte
}

func (h *headerMatcher) match(hdr headerGetter) bool {
	v := hdr.Peek(h.name)
	var ok bool
	switch {
	case h.exact != nil:
		ok = v != nil && bytes.Equal(v, h.exact)
	case h.prefix != nil:
		ok = v != nil && bytes.HasPrefix(v, h.prefix)
	case h.re != nil:
		ok = v != nil && h.re.Match(v)
	default:
		ok = (v != nil) == h.present
	}
	return ok != h.invert
}

func compileHeader(hm config.HeaderMatch) (headerMatcher, error) {
	if hm.Name == "" {
		return headerMatcher{}, fmt.Errorf("name is empty")
	}
	m := headerMatcher{name: hm.Name, present: true, invert: hm.Invert}
	if hm.Present != nil {
		m.present = *hm.Present
	}
	switch {
	case hm.Exact != "":
		m.exact = []byte(hm.Exact)
	case hm.Prefix != "":
		m.prefix = []byte(hm.Prefix)
	case hm.Regex != "":
		re, err := regexp.Compile(hm.Regex)
		if err != nil {
			return headerMatcher{}, fmt.Errorf("regex: %w", err)
		}
		m.re = re
	}
	return m, nil
}
