package tracing

import (
	"errors"
	"fmt"
	"math"

	"github.com/switchyard-proxy/switchyard/filters"
)

// Name is the filter's registered name.
const Name = "tracing"

func init() { filters.Register(factory{}) }

type factory struct{}

var (
	_ filters.Factory   = factory{}
	_ filters.Validator = (*Config)(nil)
)

// Config of the tracing filter.
type Config struct {
	// SamplingRate is the probability (0..1) that a trace this filter starts
	// is marked sampled. Traces that arrive keep their caller's decision.
	// Unset: 1.
	SamplingRate *float64 `json:"sampling_rate"`
	// NoResponseHeader stops the filter from adding traceparent to HTTP
	// responses that lack one (daprd adds it).
	NoResponseHeader bool `json:"no_response_header"`
}

// Validate checks the rate.
func (c *Config) Validate() error {
	if r := c.SamplingRate; r != nil && (math.IsNaN(*r) || *r < 0 || *r > 1) {
		return errors.New("tracing: sampling_rate must be between 0 and 1")
	}
	return nil
}

func (factory) Name() string   { return Name }
func (factory) NewConfig() any { return &Config{} }

func (factory) Build(cfg any, _ filters.Env) (filters.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok || c == nil {
		return nil, fmt.Errorf("tracing: unexpected config type %T", cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rate := 1.0
	if c.SamplingRate != nil {
		rate = *c.SamplingRate
	}
	return &Filter{rate: rate, respHeader: !c.NoResponseHeader}, nil
}
