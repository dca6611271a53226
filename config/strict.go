package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DecodeStrictPath decodes raw (a JSON-shaped tree as YAML, JSON or an xDS
// Struct produce it) into dst, a pointer to a struct with json tags, like
// DecodeStrict, but first walks raw against dst's type so that every
// problem is reported with its full field path, indices included
// ("listeners[0].adress: unknown field"). All problems are returned,
// joined. Scalars meant for string maps (map[string]string) are kept as
// written: numbers and booleans become their text.
func DecodeStrictPath(raw any, dst any, path string) error {
	if raw == nil {
		return nil
	}
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("config: decode into %T: want a non-nil pointer", dst)
	}
	var errs []error
	conformed := conform(normalize(raw), rv.Elem().Type(), path, &errs)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := DecodeStrict(conformed, dst); err != nil {
		return prefixPath(path, err)
	}
	return nil
}

var (
	durationType        = reflect.TypeOf(Duration(0))
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// conform checks v against t and returns v with the conversions the JSON
// decoder needs (string maps get their scalars as text). Problems are
// appended to errs with their path.
func conform(v any, t reflect.Type, path string, errs *[]error) any {
	if v == nil {
		return nil // YAML "key:" with no value: the zero value
	}
	if t == durationType {
		switch d := v.(type) {
		case string:
			if _, err := time.ParseDuration(d); err != nil {
				*errs = append(*errs, fieldErr(path, "invalid duration %q (want e.g. \"1.5s\", \"250ms\")", d))
			}
		case int, int64, uint64, float64:
		default:
			*errs = append(*errs, fieldErr(path, "cannot use %s as a duration", describe(v)))
		}
		return v
	}
	switch t.Kind() {
	case reflect.Pointer:
		return conform(v, t.Elem(), path, errs)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, fieldErr(path, "cannot use %s as an object", describe(v)))
			return v
		}
		fields := jsonFields(t)
		out := make(map[string]any, len(m))
		for _, k := range sortedKeys(m) {
			f, ok := fields[k]
			if !ok {
				*errs = append(*errs, fieldErr(join(path, k), "unknown field"))
				continue
			}
			out[k] = conform(m[k], f.Type, join(path, k), errs)
		}
		return out
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			*errs = append(*errs, fieldErr(path, "cannot use %s as a list", describe(v)))
			return v
		}
		out := make([]any, len(s))
		for i, e := range s {
			out[i] = conform(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		return out
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, fieldErr(path, "cannot use %s as a map", describe(v)))
			return v
		}
		if t.Elem().Kind() != reflect.String {
			return m // map[string]any: free-form, checked by its owner
		}
		out := make(map[string]any, len(m))
		for _, k := range sortedKeys(m) {
			s, ok := scalarText(m[k])
			if !ok {
				*errs = append(*errs, fieldErr(join(path, k), "cannot use %s as a string", describe(m[k])))
				continue
			}
			out[k] = s
		}
		return out
	case reflect.String:
		if _, ok := v.(string); !ok {
			*errs = append(*errs, fieldErr(path, "cannot use %s as a string", describe(v)))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			*errs = append(*errs, fieldErr(path, "cannot use %s as a boolean", describe(v)))
		}
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64:
		n, ok := number(v)
		if !ok || n != math.Trunc(n) {
			*errs = append(*errs, fieldErr(path, "cannot use %s as an integer", describe(v)))
		} else if (t.Kind() == reflect.Uint32 || t.Kind() == reflect.Uint64) && n < 0 {
			*errs = append(*errs, fieldErr(path, "must not be negative"))
		}
	default:
		if reflect.PointerTo(t).Implements(textUnmarshalerType) {
			if _, ok := v.(string); !ok {
				*errs = append(*errs, fieldErr(path, "cannot use %s as a string", describe(v)))
			}
		}
	}
	return v
}

// jsonFields maps json names to the fields of t.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// scalarText returns a YAML scalar as the text a string field keeps.
func scalarText(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case bool:
		return strconv.FormatBool(s), true
	case int:
		return strconv.Itoa(s), true
	case int64:
		return strconv.FormatInt(s, 10), true
	case uint64:
		return strconv.FormatUint(s, 10), true
	case float64:
		return strconv.FormatFloat(s, 'f', -1, 64), true
	case nil:
		return "", true
	}
	return "", false
}

func describe(v any) string {
	switch t := v.(type) {
	case string:
		return fmt.Sprintf("string %q", t)
	case bool:
		return fmt.Sprintf("boolean %t", t)
	case int, int64, uint64, float64:
		return fmt.Sprintf("number %v", t)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func fieldErr(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path == "" {
		return errors.New(msg)
	}
	return fmt.Errorf("%s: %s", path, msg)
}

func prefixPath(path string, err error) error {
	if path == "" {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}
