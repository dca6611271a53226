// Package meta reads Dapr component metadata (spec.metadata name/value
// strings) the way daprd decodes it: keys are matched case-insensitively,
// durations are Go durations or plain milliseconds.
package meta

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Reader reads typed values and collects every error, each naming its key.
type Reader struct {
	prefix string
	md     map[string]string
	errs   []error
}

// New returns a Reader whose errors start with prefix ("pubsub/redis").
func New(prefix string, md map[string]string) *Reader {
	return &Reader{prefix: prefix, md: md}
}

// Lookup returns the value of key, matched exactly first, then ignoring case.
func (r *Reader) Lookup(key string) (string, bool) {
	if v, ok := r.md[key]; ok {
		return strings.TrimSpace(v), true
	}
	for k, v := range r.md {
		if strings.EqualFold(k, key) {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func (r *Reader) fail(key, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: metadata %q: %s", r.prefix, key, fmt.Sprintf(format, args...)))
}

// Required returns a non-empty string or records an error.
func (r *Reader) Required(key string) string {
	v, _ := r.Lookup(key)
	if v == "" {
		r.fail(key, "is required")
	}
	return v
}

// String returns the value, or def when it is missing or empty.
func (r *Reader) String(key, def string) string {
	if v, _ := r.Lookup(key); v != "" {
		return v
	}
	return def
}

// Int returns an integer >= min, or def when missing or empty.
func (r *Reader) Int(key string, def, min int) int {
	v, _ := r.Lookup(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(key, "%q is not an integer", v)
		return def
	}
	if n < min {
		r.fail(key, "%d is less than %d", n, min)
		return def
	}
	return n
}

// Duration returns a duration >= 0 ("1500" is milliseconds, "1.5s" a Go
// duration), or def when missing or empty.
func (r *Reader) Duration(key string, def time.Duration) time.Duration {
	v, _ := r.Lookup(key)
	if v == "" {
		return def
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		if ms < 0 {
			r.fail(key, "%q is negative", v)
			return def
		}
		return time.Duration(ms) * time.Millisecond
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(key, "%q is not a duration (like 500ms, 15s or milliseconds)", v)
		return def
	}
	if d < 0 {
		r.fail(key, "%q is negative", v)
		return def
	}
	return d
}

// Bool returns the value as a bool, or def when missing or empty.
func (r *Reader) Bool(key string, def bool) bool {
	v, _ := r.Lookup(key)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(key, "%q is not a boolean", v)
		return def
	}
	return b
}

// OneOf returns the value if it is one of allowed (case-insensitive), def
// when missing or empty.
func (r *Reader) OneOf(key, def string, allowed ...string) string {
	v, _ := r.Lookup(key)
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	r.fail(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

// Fail records an error about key.
func (r *Reader) Fail(key, format string, args ...any) { r.fail(key, format, args...) }

// Err returns every error recorded, joined, or nil.
func (r *Reader) Err() error { return errors.Join(r.errs...) }
