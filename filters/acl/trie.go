package acl

// The operation trie follows daprd's (pkg/config/acl_trie.go) rule for rule,
// including its first-match order and its prefix behaviour (a rule for /a
// also answers /a/b), but walks the operation without splitting it.

const (
	singleWildcard = "/*"
	multiWildcard  = "/**"
)

type trieNode struct {
	seg  string // "/" + one segment of the rule
	data *operation
	subs []*trieNode
}

func (n *trieNode) put(op string, data *operation) {
	node := n
	rest := op // starts with '/'
	for {
		seg, next, last := cutSegment(rest)
		var sub *trieNode
		for _, s := range node.subs {
			if s.seg == seg {
				sub = s
				break
			}
		}
		if sub == nil {
			sub = &trieNode{seg: seg}
			if last {
				sub.data = data
			}
			node.subs = append(node.subs, sub)
			node = sub
		} else if last {
			if sub.data == nil {
				sub.data = data // the first rule for an operation wins
			}
		} else {
			node = sub
		}
		if last {
			return
		}
		rest = next
	}
}

// cutSegment splits "/a/b/c" into "/a" and "/b/c"; last is true when no '/'
// follows.
func cutSegment[T string | []byte](s T) (seg, rest T, last bool) {
	for i := 1; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i:], false
		}
	}
	return s, s[len(s):], true
}

// search finds the rule for op, which starts with '/' (and is lower-cased
// for HTTP apps).
func (n *trieNode) search(op []byte) *operation {
	node := n
	rest := op
	for {
		seg, next, isEnd := cutSegment(rest)
		rest = next
		node = node.find(seg, isEnd)
		if node == nil {
			return nil
		}
		if node.data != nil {
			if !isEnd && node.seg == singleWildcard {
				continue
			}
			return node.data
		} else if isEnd {
			node = node.find([]byte(singleWildcard), isEnd)
			if node != nil && node.data != nil {
				return node.data
			}
		}
		if isEnd {
			return nil
		}
	}
}

func (n *trieNode) find(seg []byte, isEnd bool) *trieNode {
	for _, s := range n.subs {
		if s.seg == string(seg) {
			return s
		}
		switch s.seg {
		case singleWildcard:
			if isEnd {
				return s
			}
			continue
		case multiWildcard:
			return s
		}
		if glob(s.seg, seg) {
			return s
		}
	}
	return nil
}

// glob matches s against pattern p, where '*' matches any run of bytes.
func glob(p string, s []byte) bool {
	pi, si := 0, 0
	star, mark := -1, 0
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
