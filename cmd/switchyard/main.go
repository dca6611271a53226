// Command switchyard is the sidecar proxy. A custom build with your own
// filters, resolvers or brokers is this same file plus your imports:
//
//	import (
//		"github.com/switchyard-proxy/switchyard/cmd"
//		_ "github.com/switchyard-proxy/switchyard/cmd/standard"
//		_ "example.com/you/yourfilter"
//	)
//
//	func main() { cmd.Main() }
package main

import (
	"github.com/switchyard-proxy/switchyard/cmd"
	_ "github.com/switchyard-proxy/switchyard/cmd/standard"
)

func main() { cmd.Main() }
