package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Dapr resource kinds and API versions read from Dapr's own files.
const (
	KindComponent     = "Component"
	KindSubscription  = "Subscription"
	KindConfiguration = "Configuration"

	DaprV1Alpha1 = "dapr.io/v1alpha1"
	DaprV2Alpha1 = "dapr.io/v2alpha1"
)

// daprKind returns the kind and apiVersion of a Dapr-shaped document.
func daprKind(raw map[string]any) (kind, apiVersion string) {
	kind, _ = raw["kind"].(string)
	apiVersion, _ = raw["apiVersion"].(string)
	return kind, apiVersion
}

func kindName(kind string) string {
	if kind == "" {
		return "(none)"
	}
	return kind
}

// ---- Configuration (--config) ----

// daprConfiguration is the part of Dapr's Configuration resource that
// switchyard reads (pkg/config/configuration.go in dapr/dapr).
type daprConfiguration struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		AccessControl  *daprAccessControl  `json:"accessControl"`
		NameResolution *daprNameResolution `json:"nameResolution"`
	} `json:"spec"`
}

type daprAccessControl struct {
	DefaultAction string `json:"defaultAction"`
	TrustDomain   string `json:"trustDomain"`
	Policies      []struct {
		AppID         string `json:"appId"`
		DefaultAction string `json:"defaultAction"`
		TrustDomain   string `json:"trustDomain"`
		Namespace     string `json:"namespace"`
		Operations    []struct {
			Name     string   `json:"name"`
			HTTPVerb []string `json:"httpVerb"`
			Action   string   `json:"action"`
		} `json:"operations"`
	} `json:"policies"`
}

type daprNameResolution struct {
	Component     string `json:"component"`
	Version       string `json:"version"`
	Configuration any    `json:"configuration"`
}

// daprConfigSections are the spec sections of a Dapr Configuration that
// switchyard reads; any other section is listed in Config.Skipped.
var daprConfigSections = []string{"accessControl", "nameResolution"}

// loadDaprConfiguration reads a Dapr Configuration into cfg.
func loadDaprConfiguration(cfg *Config, raw map[string]any, path string) error {
	var dc daprConfiguration
	b, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := json.Unmarshal(b, &dc); err != nil {
		return fmt.Errorf("%s: Configuration: %w", path, decodeError(err))
	}
	if dc.APIVersion != DaprV1Alpha1 {
		return fmt.Errorf("%s: apiVersion: unsupported %q for kind Configuration (want %s)", path, dc.APIVersion, DaprV1Alpha1)
	}
	if spec, ok := raw["spec"].(map[string]any); ok {
		for _, k := range sortedKeys(spec) {
			if !slices.Contains(daprConfigSections, k) {
				cfg.Skipped = append(cfg.Skipped, fmt.Sprintf("%s: Configuration %q: spec.%s is not used", path, dc.Metadata.Name, k))
			}
		}
	}
	if ac := dc.Spec.AccessControl; ac != nil {
		out := &AccessControl{DefaultAction: ac.DefaultAction, TrustDomain: ac.TrustDomain}
		for _, p := range ac.Policies {
			pol := ACLPolicy{AppID: p.AppID, DefaultAction: p.DefaultAction, TrustDomain: p.TrustDomain, Namespace: p.Namespace}
			for _, op := range p.Operations {
				pol.Operations = append(pol.Operations, ACLOperation{Name: op.Name, HTTPVerb: op.HTTPVerb, Action: op.Action})
			}
			out.Policies = append(out.Policies, pol)
		}
		cfg.AccessControl = out
		cfg.origin["access_control"] = path
		cfg.origin["access_control.dapr"] = path
	}
	if nr := dc.Spec.NameResolution; nr != nil {
		conf, ok := normalize(nr.Configuration).(map[string]any)
		if !ok && nr.Configuration != nil {
			return fmt.Errorf("%s: spec.nameResolution.configuration: cannot use %s as an object", path, describe(nr.Configuration))
		}
		cfg.NameResolution = NameResolution{Scheme: strings.ToLower(nr.Component), Config: conf}
		cfg.origin["name_resolution"] = path
	}
	return nil
}

// ---- Component and Subscription (--resources-path) ----

type daprHeader struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Scopes []string `yaml:"scopes"`
}

type daprComponent struct {
	daprHeader `yaml:",inline"`
	Spec       struct {
		Type         string             `yaml:"type"`
		Version      string             `yaml:"version"`
		IgnoreErrors bool               `yaml:"ignoreErrors"`
		InitTimeout  string             `yaml:"initTimeout"`
		Metadata     []daprMetadataItem `yaml:"metadata"`
	} `yaml:"spec"`
}

type daprMetadataItem struct {
	Name         string    `yaml:"name"`
	Value        yaml.Node `yaml:"value"`
	SecretKeyRef yaml.Node `yaml:"secretKeyRef"`
	EnvRef       yaml.Node `yaml:"envRef"`
}

type daprSubscription struct {
	daprHeader `yaml:",inline"`
	Spec       struct {
		PubSubName      string               `yaml:"pubsubname"`
		Topic           string               `yaml:"topic"`
		Route           string               `yaml:"route"` // v1alpha1
		DeadLetterTopic string               `yaml:"deadLetterTopic"`
		Metadata        map[string]yaml.Node `yaml:"metadata"`
		Routes          struct {             // v2alpha1
			Rules []struct {
				Match string `yaml:"match"`
				Path  string `yaml:"path"`
			} `yaml:"rules"`
			Default string `yaml:"default"`
		} `yaml:"routes"`
	} `yaml:"spec"`
}

// ErrSecretStore is returned for component metadata taken from a secret
// store, which switchyard does not support yet.
var ErrSecretStore = errors.New("secret stores are not supported yet")

// LoadResources reads the Dapr resource files (*.yaml, *.yml; several
// documents per file allowed) of each directory, in name order: Component
// and Subscription resources become components and subscriptions; other
// kinds are not used and are listed in skipped as "<file>: <kind> <name>".
// Resources whose scopes do not include appID are left out (no scopes: all
// apps). Each result keeps the file it came from.
func LoadResources(dirs []string, appID string) (components []Component, subs []Subscription, skipped []string, err error) {
	var errs []error
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: resources path: %w", err))
			continue
		}
		var names []string
		for _, e := range entries {
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			c, s, sk, err := loadResourceFile(filepath.Join(dir, n), appID)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			components = append(components, c...)
			subs = append(subs, s...)
			skipped = append(skipped, sk...)
		}
	}
	if len(errs) > 0 {
		return nil, nil, nil, errors.Join(errs...)
	}
	return components, subs, skipped, nil
}

func loadResourceFile(path, appID string) (components []Component, subs []Subscription, skipped []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var errs []error
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: invalid YAML: %w", path, trimYAMLErr(err))
		}
		if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
			continue // an empty document (a trailing ---)
		}
		var h daprHeader
		if err := n.Decode(&h); err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", path, doc, trimYAMLErr(err)))
			continue
		}
		if !strings.HasPrefix(h.APIVersion, "dapr.io/") {
			skipped = append(skipped, fmt.Sprintf("%s: document %d (apiVersion %q, kind %s) is not a Dapr resource", path, doc, h.APIVersion, kindName(h.Kind)))
			continue
		}
		what := fmt.Sprintf("%s %q", h.Kind, h.Metadata.Name)
		switch h.Kind {
		case KindComponent:
			c, err := decodeComponent(&n, path)
			if err != nil {
				errs = append(errs, inFile(path+": "+what, err))
				continue
			}
			if inScope(c.Scopes, appID) {
				components = append(components, c)
			}
		case KindSubscription:
			s, err := decodeSubscription(&n, path)
			if err != nil {
				errs = append(errs, inFile(path+": "+what, err))
				continue
			}
			if inScope(s.Scopes, appID) {
				subs = append(subs, s)
			}
		default:
			skipped = append(skipped, fmt.Sprintf("%s: %s is not used", path, what))
		}
	}
	return components, subs, skipped, errors.Join(errs...)
}

func decodeComponent(n *yaml.Node, path string) (Component, error) {
	var dc daprComponent
	if err := n.Decode(&dc); err != nil {
		return Component{}, trimYAMLErr(err)
	}
	var errs []error
	if dc.APIVersion != DaprV1Alpha1 {
		errs = append(errs, fmt.Errorf("apiVersion: unsupported %q for kind Component (want %s)", dc.APIVersion, DaprV1Alpha1))
	}
	if dc.Metadata.Name == "" {
		errs = append(errs, errors.New("metadata.name: required"))
	}
	c := Component{
		Name:         dc.Metadata.Name,
		Type:         dc.Spec.Type,
		Version:      dc.Spec.Version,
		Scopes:       dc.Scopes,
		IgnoreErrors: dc.Spec.IgnoreErrors,
		File:         path,
	}
	if dc.Spec.InitTimeout != "" {
		d, err := time.ParseDuration(dc.Spec.InitTimeout)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.initTimeout: invalid duration %q", dc.Spec.InitTimeout))
		}
		c.InitTimeout = Duration(d)
	}
	for i, m := range dc.Spec.Metadata {
		at := fmt.Sprintf("spec.metadata[%d]", i)
		switch {
		case m.Name == "":
			errs = append(errs, fmt.Errorf("%s.name: required", at))
			continue
		case m.SecretKeyRef.Kind != 0:
			errs = append(errs, fmt.Errorf("%s (%s): secretKeyRef: %w", at, m.Name, ErrSecretStore))
			continue
		case m.EnvRef.Kind != 0:
			errs = append(errs, fmt.Errorf("%s (%s): envRef is not supported yet", at, m.Name))
			continue
		}
		if c.Metadata == nil {
			c.Metadata = map[string]string{}
		}
		if _, dup := c.Metadata[m.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: duplicate %q", at, m.Name))
			continue
		}
		v, err := nodeText(&m.Value)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s).value: %w", at, m.Name, err))
			continue
		}
		c.Metadata[m.Name] = v
	}
	return c, errors.Join(errs...)
}

func decodeSubscription(n *yaml.Node, path string) (Subscription, error) {
	var ds daprSubscription
	if err := n.Decode(&ds); err != nil {
		return Subscription{}, trimYAMLErr(err)
	}
	s := Subscription{
		Name:            ds.Metadata.Name,
		PubSub:          ds.Spec.PubSubName,
		Topic:           ds.Spec.Topic,
		DeadLetterTopic: ds.Spec.DeadLetterTopic,
		Scopes:          ds.Scopes,
		File:            path,
	}
	var errs []error
	switch ds.APIVersion {
	case DaprV1Alpha1:
		s.Route = ds.Spec.Route
	case DaprV2Alpha1:
		s.Route = ds.Spec.Routes.Default
		for _, r := range ds.Spec.Routes.Rules {
			s.Rules = append(s.Rules, SubscriptionRule{Match: r.Match, Path: r.Path})
		}
	default:
		errs = append(errs, fmt.Errorf("apiVersion: unsupported %q for kind Subscription (want %s or %s)", ds.APIVersion, DaprV1Alpha1, DaprV2Alpha1))
	}
	for _, k := range sortedKeys(ds.Spec.Metadata) {
		n := ds.Spec.Metadata[k]
		v, err := nodeText(&n)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.metadata.%s: %w", k, err))
			continue
		}
		if s.Metadata == nil {
			s.Metadata = map[string]string{}
		}
		s.Metadata[k] = v
	}
	return s, errors.Join(errs...)
}

// nodeText returns a metadata value as text: a scalar as written (a
// number or boolean keeps its spelling), anything else as JSON, which is
// how Dapr passes structured values to components.
func nodeText(n *yaml.Node) (string, error) {
	switch n.Kind {
	case 0:
		return "", nil
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "", nil
		}
		return n.Value, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return "", trimYAMLErr(err)
	}
	b, err := json.Marshal(normalize(v))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// inScope reports whether a resource with these scopes applies to appID.
func inScope(scopes []string, appID string) bool {
	return len(scopes) == 0 || slices.Contains(scopes, appID)
}
