package config

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeStrictPath(t *testing.T) {
	tests := []struct {
		name    string
		raw     any
		want    *Config
		wantErr string
	}{
		{"string map scalars kept as text",
			map[string]any{"components": []any{map[string]any{"name": "p", "metadata": map[string]any{"n": 1, "b": true, "f": 0.5, "s": "x"}}}},
			&Config{Components: []Component{{Name: "p", Metadata: map[string]string{"n": "1", "b": "true", "f": "0.5", "s": "x"}}}}, ""},
		{"durations as text or seconds",
			map[string]any{"routes": []any{map[string]any{"timeout": "1.5s"}, map[string]any{"timeout": 2}}},
			&Config{Routes: []Route{{Timeout: Duration(1500e6)}, {Timeout: Duration(2e9)}}}, ""},
		{"null is the zero value", map[string]any{"listeners": nil}, &Config{}, ""},
		{"every problem with its path",
			map[string]any{
				"routes":   []any{map[string]any{"match": map[string]any{"headers": []any{map[string]any{"nme": "x", "present": "yes"}}}}},
				"clusters": []any{"billing"},
				"app_port": 1.5,
			}, nil, strings.Join([]string{
				"app_port: cannot use number 1.5 as an integer",
				"clusters[0]: cannot use string \"billing\" as an object",
				"routes[0].match.headers[0].nme: unknown field",
				"routes[0].match.headers[0].present: cannot use string \"yes\" as a boolean",
			}, "\n")},
		{"structured value in a string map",
			map[string]any{"components": []any{map[string]any{"metadata": map[string]any{"m": []any{1}}}}}, nil,
			"components[0].metadata.m: cannot use a list as a string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := &Config{}
			err := DecodeStrictPath(tc.raw, got, "")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestGoldenRoundTrip: the normalized JSON of a loaded config decodes back
// to the same model, so our YAML keys are exactly Config's json tags.
func TestGoldenRoundTrip(t *testing.T) {
	c, err := LoadFile(testdata + "/switchyard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := jsonTree(c)
	if err != nil {
		t.Fatal(err)
	}
	back := &Config{}
	if err := DecodeStrictPath(b, back, ""); err != nil {
		t.Fatal(err)
	}
	c.Skipped, c.Source, c.origin = nil, "", nil
	for i := range c.Components {
		c.Components[i].File = ""
	}
	for i := range c.Subscriptions {
		c.Subscriptions[i].File = ""
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", back, c)
	}
}

func jsonTree(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}
