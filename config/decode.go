package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// DecodeStrict decodes a settings map (from YAML, flags or an xDS
// TypedStruct, all of which end up as JSON-shaped maps) into dst, a pointer
// to a struct with json tags. Unknown fields are errors. The same decoder
// serves every source, so YAML and xDS give the same model.
func DecodeStrict(raw any, dst any) error {
	if raw == nil {
		return nil
	}
	b, err := json.Marshal(normalize(raw))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	return nil
}

// decodeError makes encoding/json's messages read as field errors.
func decodeError(err error) error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Errorf("%s: cannot use %s as %s", ute.Field, ute.Value, ute.Type)
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Errorf("%s: unknown field", strings.Trim(rest, `"`))
	}
	return errors.New(strings.TrimPrefix(msg, "json: "))
}

// normalize turns map[any]any (older YAML decoders) into map[string]any.
func normalize(v any) any {
	switch t := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[fmt.Sprint(k)] = normalize(v)
		}
		return m
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[k] = normalize(v)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, v := range t {
			out[i] = normalize(v)
		}
		return out
	}
	return v
}
