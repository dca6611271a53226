package metrics

import (
	"errors"
	"fmt"

	"github.com/switchyard-proxy/switchyard/filters"
)

// Name is the filter's registered name.
const Name = "metrics"

// DefaultMaxAppIDs is how many distinct app ids get their own series when
// the config does not say.
const DefaultMaxAppIDs = 100

func init() { filters.Register(factory{}) }

type factory struct{}

var (
	_ filters.Factory   = factory{}
	_ filters.Validator = (*Config)(nil)
)

// Config of the metrics filter.
type Config struct {
	// ExcludeVerbs leaves the method label empty, like daprd's
	// metrics.http.excludeVerbs.
	ExcludeVerbs bool `json:"exclude_verbs"`
	// MaxAppIDs caps the distinct values of the dst_app_id / src_app_id
	// labels; further app ids are counted under "other". 0: DefaultMaxAppIDs.
	MaxAppIDs int `json:"max_app_ids"`
}

// Validate checks the limits.
func (c *Config) Validate() error {
	if c.MaxAppIDs < 0 {
		return errors.New("metrics: max_app_ids must not be negative")
	}
	return nil
}

func (factory) Name() string   { return Name }
func (factory) NewConfig() any { return &Config{} }

func (factory) Build(cfg any, env filters.Env) (filters.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok || c == nil {
		return nil, fmt.Errorf("metrics: unexpected config type %T", cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return New(*c, env), nil
}
