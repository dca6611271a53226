package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Load builds the configuration from a parsed flag set (on which BindFlags
// was called; nil means no flags). Precedence, lowest first: built-in
// defaults, each --config file in order, SWITCHYARD_* (and DAPR_API_TOKEN,
// APP_API_TOKEN) environment variables, flags given explicitly. Then the
// Dapr resources of every --resources-path directory are read, the model's
// defaults applied (ApplyDefaults) and the whole config validated; every
// problem is reported, each as "<source>: <field path>: <reason>".
func Load(fs *pflag.FlagSet) (*Config, error) {
	return load(fs, true, nil)
}

// LoadFile loads one config file (our YAML or a Dapr Configuration) over
// the built-in defaults, ignoring flags and the environment (except
// NAMESPACE, as ApplyDefaults does), reads the resources it names, applies
// the defaults and validates. It is what `switchyard validate -c` uses.
func LoadFile(path string) (*Config, error) {
	return load(nil, false, []string{path})
}

func load(fs *pflag.FlagSet, useEnv bool, files []string) (*Config, error) {
	v := viper.New()
	for _, s := range settings {
		v.SetDefault(s.key, s.def)
		if useEnv {
			if err := v.BindEnv(append([]string{s.key}, s.envNames()...)...); err != nil {
				return nil, fmt.Errorf("config: bind %s: %w", s.key, err)
			}
		}
		if fs != nil && s.flag != "" {
			if f := fs.Lookup(s.flag); f != nil {
				if err := v.BindPFlag(s.key, f); err != nil {
					return nil, fmt.Errorf("config: bind --%s: %w", s.flag, err)
				}
			}
		}
	}
	if files == nil {
		var err error
		if files, err = asStrings(v.Get("config")); err != nil {
			return nil, fmt.Errorf("config: --config: %w", err)
		}
	}

	cfg := &Config{origin: map[string]string{}}
	var errs []error
	for _, f := range files {
		if err := loadConfigFile(cfg, v, f); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	for _, s := range settings {
		where := settingOrigin(s, fs, useEnv, cfg.origin[s.key])
		if err := s.set(cfg, v.Get(s.key)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", where, s.key, err))
			continue
		}
		cfg.origin[s.key] = where
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.DaprConfig = files
	cfg.Source = strings.Join(files, ", ")

	comps, subs, skipped, err := LoadResources(cfg.ResourcesPath, cfg.AppID)
	if err != nil {
		return nil, err
	}
	cfg.Components = append(cfg.Components, comps...)
	cfg.Subscriptions = append(cfg.Subscriptions, subs...)
	cfg.Skipped = append(cfg.Skipped, skipped...)

	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// envNames are the environment variables of a setting, first found wins.
func (s setting) envNames() []string {
	if s.flag == "" {
		return s.env
	}
	return append([]string{s.envName()}, s.env...)
}

// settingOrigin says where a setting's final value came from.
func settingOrigin(s setting, fs *pflag.FlagSet, useEnv bool, file string) string {
	if fs != nil && s.flag != "" && fs.Changed(s.flag) {
		return "flag --" + s.flag
	}
	if useEnv {
		for _, e := range s.envNames() {
			if os.Getenv(e) != "" {
				return "env " + e
			}
		}
	}
	if file != "" {
		return file
	}
	return "defaults"
}

// loadConfigFile reads one --config file into cfg: a Dapr Configuration or
// our YAML, told apart by content. Settings that are also flags go to
// viper's config layer so the environment and flags can override them;
// the structured sections replace what earlier files gave.
func loadConfigFile(cfg *Config, v *viper.Viper, path string) error {
	docs, err := readYAMLDocs(path)
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		return fmt.Errorf("%s: empty config file", path)
	}
	if len(docs) > 1 {
		return fmt.Errorf("%s: a config file holds one document; found %d", path, len(docs))
	}
	raw, ok := normalize(docs[0]).(map[string]any)
	if !ok {
		return fmt.Errorf("%s: cannot use %s as a config (want an object)", path, describe(docs[0]))
	}
	if kind, api := daprKind(raw); kind != "" || api != "" {
		if kind != KindConfiguration {
			return fmt.Errorf("%s: kind %s cannot be a --config file (want a Dapr Configuration or switchyard YAML; put Dapr resources in a --resources-path directory)", path, kindName(kind))
		}
		return loadDaprConfiguration(cfg, raw, path)
	}

	fc := &Config{}
	if err := DecodeStrictPath(raw, fc, ""); err != nil {
		return inFile(path, err)
	}
	if _, ok := raw["config"]; ok {
		return fmt.Errorf("%s: config: a config file cannot name other config files (use --config again)", path)
	}
	scalars := map[string]any{}
	fields := configFieldIndex()
	for _, k := range sortedKeys(raw) {
		cfg.origin[k] = path
		if k == "access_control" {
			delete(cfg.origin, "access_control.dapr")
		}
		if _, ok := settingByKey(k); ok {
			val := raw[k]
			if k == "resources_path" {
				val = relativeTo(path, fc.ResourcesPath)
			}
			scalars[k] = val
			continue
		}
		i := fields[k]
		reflect.ValueOf(cfg).Elem().Field(i).Set(reflect.ValueOf(fc).Elem().Field(i))
	}
	if err := v.MergeConfigMap(scalars); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// relativeTo resolves relative directories named in a file against the
// file's own directory.
func relativeTo(file string, dirs []string) []any {
	out := make([]any, len(dirs))
	for i, d := range dirs {
		if !filepath.IsAbs(d) {
			d = filepath.Join(filepath.Dir(file), d)
		}
		out[i] = d
	}
	return out
}

// configFieldIndex maps Config's json keys to field indices.
func configFieldIndex() map[string]int {
	t := reflect.TypeOf(Config{})
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = i
		}
	}
	return out
}

// readYAMLDocs reads every non-empty YAML document of a file.
func readYAMLDocs(path string) ([]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []any
	for {
		var d any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: invalid YAML: %w", path, trimYAMLErr(err))
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// trimYAMLErr makes yaml.v3's messages one line without its prefix.
func trimYAMLErr(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// inFile prefixes every problem of a (possibly joined) error with the file.
func inFile(file string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		out = append(out, fmt.Errorf("%s: %w", file, e))
	}
	return errors.Join(out...)
}

// flatten lists the problems of an errors.Join tree.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
