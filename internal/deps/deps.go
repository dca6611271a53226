// Package deps pins modules that packages under construction will import.
// It is removed once every module below is imported by real code.
package deps

import (
	_ "github.com/dapr/dapr/pkg/proto/common/v1"
	_ "github.com/dapr/dapr/pkg/proto/internals/v1"
	_ "github.com/dapr/dapr/pkg/proto/runtime/v1"
	_ "github.com/dapr/go-sdk/client"
	_ "github.com/dapr/go-sdk/service/http"
	_ "github.com/google/cel-go/cel"
	_ "github.com/hashicorp/mdns"
	_ "github.com/miekg/dns"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/spf13/pflag"
	_ "github.com/spf13/viper"
	_ "github.com/valyala/fasthttp"
	_ "go.uber.org/zap"
	_ "golang.org/x/time/rate"
	_ "google.golang.org/grpc"
	_ "gopkg.in/yaml.v3"
)
