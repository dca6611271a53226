// Command custombuild is a custom switchyard build: the same three-line main
// as cmd/switchyard, with a smaller set of imports than cmd/standard (service
// invocation only: no brokers, no subscription listener, static and local
// name resolution) plus a filter written outside the project
// (examples/headers). With no configuration file it starts with the built-in
// defaults minus what the build leaves out.
//
//	go build -o custom-switchyard ./examples/custombuild
//	./custom-switchyard --app-id orders --app-port 3000 -c examples/custombuild/switchyard.yaml
package main

import (
	"github.com/switchyard-proxy/switchyard/cmd"

	// listeners
	_ "github.com/switchyard-proxy/switchyard/listeners/admin"
	_ "github.com/switchyard-proxy/switchyard/listeners/grpc"
	_ "github.com/switchyard-proxy/switchyard/listeners/http"
	_ "github.com/switchyard-proxy/switchyard/listeners/internalgrpc"
	_ "github.com/switchyard-proxy/switchyard/listeners/metrics"

	// filters: a few standard ones and our own
	_ "github.com/switchyard-proxy/switchyard/examples/headers"
	_ "github.com/switchyard-proxy/switchyard/filters/apitoken"
	_ "github.com/switchyard-proxy/switchyard/filters/metrics"
	_ "github.com/switchyard-proxy/switchyard/filters/router"

	// clusters and name resolution
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/local"
	_ "github.com/switchyard-proxy/switchyard/clusters/resolver/static"
	_ "github.com/switchyard-proxy/switchyard/clusters/sidecar"
)

func main() { cmd.Main() }
