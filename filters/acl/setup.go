package acl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

// Name is the filter's registered name.
const Name = "acl"

// Actions, and daprd's default trust domain.
const (
	ActionAllow        = "allow"
	ActionDeny         = "deny"
	DefaultTrustDomain = "public"
)

func init() { filters.Register(factory{}) }

type factory struct{}

var (
	_ filters.Factory   = factory{}
	_ filters.Validator = (*Config)(nil)
)

// Config of the acl filter: Dapr's accessControl section (snake_case keys)
// plus switchyard's options.
type Config struct {
	config.AccessControl

	// AppProtocol is the local app's protocol: http (default) lower-cases
	// operations and honours http_verb; grpc matches operations as given
	// and ignores verbs, as daprd does.
	AppProtocol string `json:"app_protocol"`
	// TrustCallerHeader matches policies on the caller's app id and
	// namespace from dapr-caller-app-id / dapr-caller-namespace when no
	// mTLS identity is present. Weaker than mTLS: any client that reaches
	// the listener can claim any app id.
	TrustCallerHeader bool `json:"trust_caller_header"`
	// AllListeners enforces the policy on invocations arriving on any
	// listener, not only the internal (sidecar-to-sidecar) one.
	AllListeners bool `json:"all_listeners"`
}

func validAction(a string) bool {
	return a == "" || strings.EqualFold(a, ActionAllow) || strings.EqualFold(a, ActionDeny)
}

// Validate checks the policies as daprd does (every policy needs app_id,
// trust_domain and namespace) and, stricter than daprd, the action names.
func (c *Config) Validate() error {
	var errs []error
	if !validAction(c.DefaultAction) {
		errs = append(errs, fmt.Errorf("acl: default_action must be allow or deny, not %q", c.DefaultAction))
	}
	switch c.AppProtocol {
	case "", "http", "grpc":
	default:
		errs = append(errs, fmt.Errorf("acl: app_protocol must be http or grpc, not %q", c.AppProtocol))
	}
	for i, p := range c.Policies {
		where := fmt.Sprintf("acl: policies[%d]", i)
		if p.AppID == "" {
			errs = append(errs, fmt.Errorf("%s: app_id is required", where))
		}
		if p.TrustDomain == "" {
			errs = append(errs, fmt.Errorf("%s (%s): trust_domain is required", where, p.AppID))
		}
		if p.Namespace == "" {
			errs = append(errs, fmt.Errorf("%s (%s): namespace is required", where, p.AppID))
		}
		if !validAction(p.DefaultAction) {
			errs = append(errs, fmt.Errorf("%s (%s): default_action must be allow or deny, not %q", where, p.AppID, p.DefaultAction))
		}
		for j, op := range p.Operations {
			if op.Name == "" {
				errs = append(errs, fmt.Errorf("%s.operations[%d]: name is required", where, j))
			}
			if !validAction(op.Action) || op.Action == "" {
				errs = append(errs, fmt.Errorf("%s.operations[%d] (%s): action must be allow or deny, not %q", where, j, op.Name, op.Action))
			}
		}
	}
	return errors.Join(errs...)
}

func (factory) Name() string   { return Name }
func (factory) NewConfig() any { return &Config{} }

func (factory) Build(cfg any, env filters.Env) (filters.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok || c == nil {
		return nil, fmt.Errorf("acl: unexpected config type %T", cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return New(*c, env), nil
}
