// Package admin is the admin listener, in Envoy's manner: readiness, the
// configuration being served, clusters, listeners, stats, the log level and
// a shutdown endpoint. Bind it to loopback.
package admin

import (
	"bytes"
	"encoding/json"
	"net/http/pprof"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fasthttp/pprofhandler"
	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/listeners"
	"github.com/switchyard-proxy/switchyard/listeners/metrics"
)

func init() { listeners.Register(factory{}) }

type factory struct{}

var _ listeners.Factory = factory{}

func (factory) Kind() string { return config.ListenerAdmin }

// Level is the process log level the admin listener may change; cmd sets it.
var Level *zap.AtomicLevel

func (factory) Start(spec config.Listener, _ *listeners.ChainRef, rt *listeners.Runtime) (listeners.Listener, error) {
	log := rt.Logger.With(zap.String("scope", "listener.admin"))
	return metrics.Serve(log, spec, func(ctx *fasthttp.RequestCtx) { serve(ctx, rt) })
}

var pprofIndex = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Index)

func serve(ctx *fasthttp.RequestCtx, rt *listeners.Runtime) {
	if bytes.HasPrefix(ctx.Path(), []byte("/debug/pprof/")) {
		if len(ctx.Path()) == len("/debug/pprof/") {
			// pprofhandler answers 404 for any path ending in '/'.
			pprofIndex(ctx)
			return
		}
		pprofhandler.PprofHandler(ctx)
		return
	}
	switch string(ctx.Path()) {
	case "/", "/help":
		ctx.SetContentType("text/plain")
		ctx.SetBodyString("GET /ready\nGET /config_dump\nGET /clusters\nGET /listeners\nGET /stats\nGET /debug/pprof/\nPOST /logging?level=debug|info|warn|error\nPOST /quitquitquit\n")
	case "/ready":
		if rt.Health.Ready() {
			ctx.SetBodyString("LIVE\n")
			return
		}
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString("NOT READY\n")
	case "/config_dump":
		s := rt.Snapshot()
		if s == nil {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			return
		}
		c := *s.Config
		if c.APIToken != "" {
			c.APIToken = "[redacted]"
		}
		if c.AppAPIToken != "" {
			c.AppAPIToken = "[redacted]"
		}
		c.Listeners = redactFilters(c.Listeners)
		c.Components = redactComponents(c.Components)
		c.NameResolution.Config = redactMap(c.NameResolution.Config)
		writeJSON(ctx, map[string]any{"version": s.Version, "source": s.Source, "config": c})
	case "/clusters":
		set := rt.Clusters()
		if set == nil {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			return
		}
		writeJSON(ctx, map[string]any{"clusters": set.Names(), "remote_apps": set.RemoteApps(), "components": set.Components()})
	case "/listeners":
		writeJSON(ctx, rt.Listeners())
	case "/stats", "/stats/prometheus", "/metrics":
		var b bytes.Buffer
		_ = rt.Stats.WritePrometheus(&b)
		ctx.SetContentType("text/plain; version=0.0.4")
		ctx.SetBody(b.Bytes())
	case "/logging":
		if !ctx.IsPost() {
			ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
			return
		}
		lvl := string(ctx.QueryArgs().Peek("level"))
		if Level == nil {
			ctx.SetStatusCode(fasthttp.StatusNotImplemented)
			return
		}
		if err := Level.UnmarshalText([]byte(lvl)); err != nil {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			ctx.SetBodyString(err.Error())
			return
		}
		ctx.SetBodyString("level: " + Level.String() + "\n")
	case "/quitquitquit":
		if !ctx.IsPost() {
			ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
			return
		}
		ctx.SetBodyString("OK\n")
		if rt.Shutdown != nil {
			go rt.Shutdown()
		}
	default:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
	}
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		ctx.Error(err.Error(), fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// redactFilters copies listeners, hiding filter settings named like secrets.
func redactFilters(ls []config.Listener) []config.Listener {
	out := make([]config.Listener, len(ls))
	for i, l := range ls {
		out[i] = l
		out[i].Filters = make([]config.FilterSpec, len(l.Filters))
		for j, f := range l.Filters {
			out[i].Filters[j] = f
			if f.Config == nil {
				continue
			}
			out[i].Filters[j].Config = redactMap(f.Config)
		}
	}
	return out
}

// secretKey reports settings named like credentials, in any case and as
// part of a longer name (token, api_token, redisPassword, clientSecret).
func secretKey(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "token") || strings.Contains(k, "password") || strings.Contains(k, "secret")
}

// redactMap copies m, hiding the values of keys named like secrets.
func redactMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if secretKey(k) {
			v = "[redacted]"
		}
		out[k] = v
	}
	return out
}

// redactComponents copies cs, hiding metadata named like secrets (a redis
// password, a NATS token).
func redactComponents(cs []config.Component) []config.Component {
	if cs == nil {
		return nil
	}
	out := make([]config.Component, len(cs))
	for i, c := range cs {
		out[i] = c
		if c.Metadata == nil {
			continue
		}
		md := make(map[string]string, len(c.Metadata))
		for k, v := range c.Metadata {
			if secretKey(k) {
				v = "[redacted]"
			}
			md[k] = v
		}
		out[i].Metadata = md
	}
	return out
}
