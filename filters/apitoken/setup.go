package apitoken

import (
	"errors"
	"fmt"
	"os"

	"github.com/switchyard-proxy/switchyard/filters"
)

// Name is the filter's registered name.
const Name = "apitoken"

func init() { filters.Register(factory{}) }

type factory struct{}

var (
	_ filters.Factory   = factory{}
	_ filters.Validator = (*Config)(nil)
)

// Config of the apitoken filter. Exactly one of Token and TokenEnv is set.
type Config struct {
	// Token is the expected value of the dapr-api-token header.
	Token string `json:"token"`
	// TokenEnv names an environment variable (DAPR_API_TOKEN for daprd's
	// behaviour) read once when the filter is built.
	TokenEnv string `json:"token_env"`
}

// Validate checks that the token has exactly one source.
func (c *Config) Validate() error {
	switch {
	case c.Token == "" && c.TokenEnv == "":
		return errors.New("apitoken: one of token and token_env is required")
	case c.Token != "" && c.TokenEnv != "":
		return errors.New("apitoken: token and token_env are mutually exclusive")
	}
	return nil
}

func (factory) Name() string   { return Name }
func (factory) NewConfig() any { return &Config{} }

func (factory) Build(cfg any, _ filters.Env) (filters.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok || c == nil {
		return nil, fmt.Errorf("apitoken: unexpected config type %T", cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	token := c.Token
	if c.TokenEnv != "" {
		token = os.Getenv(c.TokenEnv)
		if token == "" {
			return nil, fmt.Errorf("apitoken: environment variable %s: %w", c.TokenEnv, ErrEmptyToken)
		}
	}
	f, err := New(token)
	if err != nil {
		return nil, err
	}
	return f, nil
}
