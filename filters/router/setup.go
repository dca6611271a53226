package router

import (
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

func init() { filters.Register(factory{}) }

type factory struct{}

var _ filters.Factory = factory{}

// Config of the router filter: none today; the route table is the
// snapshot's top-level `routes`.
type Config struct{}

func (factory) Name() string   { return config.RouterFilter }
func (factory) NewConfig() any { return &Config{} }
func (factory) Build(_ any, env filters.Env) (filters.Filter, error) {
	return New(env.Routes, env.Clusters)
}
