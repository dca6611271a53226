package meta

import (
	"strings"
	"testing"
	"time"
)

func TestReader(t *testing.T) {
	tests := []struct {
		name    string
		md      map[string]string
		read    func(r *Reader) any
		want    any
		wantErr string
	}{
		{"int default", nil, func(r *Reader) any { return r.Int("n", 7, 0) }, 7, ""},
		{"int value any case", map[string]string{"N": " 3 "}, func(r *Reader) any { return r.Int("n", 7, 0) }, 3, ""},
		{"int below min", map[string]string{"n": "-1"}, func(r *Reader) any { return r.Int("n", 7, 0) }, 7, `"n": -1 is less than 0`},
		{"duration millis", map[string]string{"d": "1500"}, func(r *Reader) any { return r.Duration("d", 0) }, 1500 * time.Millisecond, ""},
		{"duration go", map[string]string{"d": "2s"}, func(r *Reader) any { return r.Duration("d", 0) }, 2 * time.Second, ""},
		{"duration bad", map[string]string{"d": "x"}, func(r *Reader) any { return r.Duration("d", time.Second) }, time.Second, `"d": "x" is not a duration`},
		{"bool", map[string]string{"b": "true"}, func(r *Reader) any { return r.Bool("b", false) }, true, ""},
		{"required missing", nil, func(r *Reader) any { return r.Required("host") }, "", `"host": is required`},
		{"one of", map[string]string{"p": "NEW"}, func(r *Reader) any { return r.OneOf("p", "all", "all", "new") }, "new", ""},
		{"one of bad", map[string]string{"p": "x"}, func(r *Reader) any { return r.OneOf("p", "all", "all", "new") }, "all", `"p": "x" is not one of all, new`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := New("pubsub/x", tc.md)
			if got := tc.read(r); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			err := r.Err()
			if tc.wantErr == "" && err != nil {
				t.Errorf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "pubsub/x: metadata ")) {
				t.Errorf("err = %v, want %s", err, tc.wantErr)
			}
		})
	}
}
