package accesslog

import (
	"errors"
	"fmt"
	"time"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

// Name is the filter's registered name.
const Name = "accesslog"

// Formats.
const (
	FormatJSON = "json"
	FormatText = "text"
)

// Defaults.
const (
	DefaultBufferSize    = 64 << 10
	DefaultFlushInterval = time.Second
)

func init() { filters.Register(factory{}) }

type factory struct{}

var (
	_ filters.Factory   = factory{}
	_ filters.Validator = (*Config)(nil)
)

// Config of the accesslog filter.
type Config struct {
	// Path of the file lines are appended to; "" is standard output.
	Path string `json:"path"`
	// Logger sends each line to the runtime's zap logger (named
	// "accesslog") instead of a file. Exclusive with Path.
	Logger bool `json:"logger"`
	// Format is json (default) or text.
	Format string `json:"format"`
	// BufferSize is the bytes buffered before a write; 0: 64 KiB.
	BufferSize int `json:"buffer_size"`
	// FlushInterval is the longest a line waits in the buffer; 0: 1s.
	FlushInterval config.Duration `json:"flush_interval"`
}

// Validate checks the settings.
func (c *Config) Validate() error {
	var errs []error
	switch c.Format {
	case "", FormatJSON, FormatText:
	default:
		errs = append(errs, fmt.Errorf("accesslog: format must be %s or %s, not %q", FormatJSON, FormatText, c.Format))
	}
	if c.Logger && c.Path != "" {
		errs = append(errs, errors.New("accesslog: path and logger are mutually exclusive"))
	}
	if c.BufferSize < 0 {
		errs = append(errs, errors.New("accesslog: buffer_size must not be negative"))
	}
	if c.FlushInterval < 0 {
		errs = append(errs, errors.New("accesslog: flush_interval must not be negative"))
	}
	return errors.Join(errs...)
}

func (factory) Name() string   { return Name }
func (factory) NewConfig() any { return &Config{} }

func (factory) Build(cfg any, env filters.Env) (filters.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok || c == nil {
		return nil, fmt.Errorf("accesslog: unexpected config type %T", cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return New(*c, env)
}
