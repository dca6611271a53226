package ratelimit

import (
	"errors"
	"fmt"
	"math"

	"github.com/switchyard-proxy/switchyard/filters"
)

// Name is the filter's registered name.
const Name = "ratelimit"

// Values of Config.Per.
const (
	PerGlobal = "global" // one bucket for the whole listener
	PerCaller = "caller" // one bucket per calling app id (or client address)
	PerAppID  = "app_id" // one bucket per invoked app id
)

// DefaultMaxKeys bounds the number of buckets kept for per caller / app_id.
const DefaultMaxKeys = 10000

func init() { filters.Register(factory{}) }

type factory struct{}

var (
	_ filters.Factory   = factory{}
	_ filters.Validator = (*Config)(nil)
)

// Config of the ratelimit filter.
type Config struct {
	// RequestsPerSecond is the sustained rate (may be fractional: 0.5 is one
	// request every two seconds).
	RequestsPerSecond float64 `json:"requests_per_second"`
	// Burst is how many requests may pass at once after a quiet period;
	// 0: RequestsPerSecond rounded up.
	Burst int `json:"burst"`
	// Per is global (default), caller or app_id.
	Per string `json:"per"`
	// MaxKeys bounds the buckets of per caller / app_id; 0: DefaultMaxKeys.
	MaxKeys int `json:"max_keys"`
}

// Validate checks the settings.
func (c *Config) Validate() error {
	var errs []error
	if !(c.RequestsPerSecond > 0) || math.IsInf(c.RequestsPerSecond, 0) {
		errs = append(errs, errors.New("ratelimit: requests_per_second must be a positive number"))
	}
	if c.Burst < 0 {
		errs = append(errs, errors.New("ratelimit: burst must not be negative"))
	}
	switch c.Per {
	case "", PerGlobal, PerCaller, PerAppID:
	default:
		errs = append(errs, fmt.Errorf("ratelimit: per must be %s, %s or %s, not %q", PerGlobal, PerCaller, PerAppID, c.Per))
	}
	if c.MaxKeys < 0 {
		errs = append(errs, errors.New("ratelimit: max_keys must not be negative"))
	}
	return errors.Join(errs...)
}

func (factory) Name() string   { return Name }
func (factory) NewConfig() any { return &Config{} }

func (factory) Build(cfg any, _ filters.Env) (filters.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok || c == nil {
		return nil, fmt.Errorf("ratelimit: unexpected config type %T", cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return New(*c), nil
}
