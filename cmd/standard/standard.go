// Package standard imports switchyard's standard set of listeners, filters,
// cluster kinds, resolvers and brokers, so that they register. A custom
// build imports it plus its own packages.
package standard

import (
	// listeners
	_ "github.com/switchyard-proxy/switchyard/listeners/admin"
	_ "github.com/switchyard-proxy/switchyard/listeners/grpc"
	_ "github.com/switchyard-proxy/switchyard/listeners/http"
	_ "github.com/switchyard-proxy/switchyard/listeners/internalgrpc"
	_ "github.com/switchyard-proxy/switchyard/listeners/metrics"
	_ "github.com/switchyard-proxy/switchyard/listeners/subscription"

	// filters
	_ "github.com/switchyard-proxy/switchyard/filters/accesslog"
	_ "github.com/switchyard-proxy/switchyard/filters/acl"
	_ "github.com/switchyard-proxy/switchyard/filters/apitoken"
	_ "github.com/switchyard-proxy/switchyard/filters/metrics"
	_ "github.com/switchyard-proxy/switchyard/filters/ratelimit"
	_ "github.com/switchyard-proxy/switchyard/filters/router"
	_ "github.com/switchyard-proxy/switchyard/filters/tracing"

	// cluster kinds
	_ "github.com/switchyard-proxy/switchyard/clusters/grpcapp"
	_ "github.com/switchyard-proxy/switchyard/clusters/sidecar"

	// name resolution
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/consul"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/dns"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/local"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/mdns"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/static"

	// pub/sub: the component cluster and the brokers
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/jetstream"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/memory"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsub/redis"
	_ "github.com/switchyard-proxy/switchyard/clusters/pubsubcluster"
)
