// Package cmd is switchyard's command line: run (the default), validate,
// version. cmd/switchyard's main only calls Main, so that a custom build is
// that main plus the builder's own imports.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/switchyard-proxy/switchyard/clusters/pubsub"
	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters/stats"
	"github.com/switchyard-proxy/switchyard/internal/codepages"
	"github.com/switchyard-proxy/switchyard/internal/procs"
	"github.com/switchyard-proxy/switchyard/listeners"
	"github.com/switchyard-proxy/switchyard/listeners/admin"
)

// Version is set at build time (-ldflags "-X .../cmd.Version=...").
var Version = "0.1.0-dev"

var started = time.Now()

// Main runs the command line and exits.
func Main() { os.Exit(Run(os.Args[1:], os.Stdout, os.Stderr)) }

// Run runs the command line with args (without the program name) and
// returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	sub := "run"
	if len(args) > 0 {
		switch args[0] {
		case "run", "validate", "version", "control-plane":
			sub, args = args[0], args[1:]
		}
	}
	switch sub {
	case "version":
		fmt.Fprintf(stdout, "switchyard %s\n", Version)
		return 0
	case "control-plane":
		fmt.Fprintln(stderr, "switchyard: the control-plane command is not built yet")
		return 2
	}
	fs := pflag.NewFlagSet("switchyard "+sub, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	config.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg, err := config.Load(fs)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard: invalid configuration:\n%v\n", err)
		return 1
	}
	// A custom build may leave out a listener kind or the in-memory broker
	// that the built-in defaults would use; the defaults adapt to the build.
	dropped := cfg.DropUnavailableDefaults(
		func(kind string) bool { return slices.Contains(listeners.Kinds(), kind) },
		func(typ string) bool { _, ok := pubsub.Get(typ); return ok })
	if sub == "validate" {
		return validate(cfg, stdout, stderr)
	}
	return run(cfg, stderr, dropped)
}

func validate(cfg *config.Config, stdout, stderr io.Writer) int {
	// Build listeners' chains and clusters without binding or dialing:
	// components are left out because building a broker connects to it.
	dry := *cfg
	dry.Components = nil
	rt := &listeners.Runtime{Logger: zap.NewNop(), Version: Version, Stats: stats.NewRegistry("dapr_")}
	if err := listeners.Build(context.Background(), rt, config.NewSnapshot(&dry, "validate")); err != nil {
		fmt.Fprintf(stderr, "switchyard: invalid configuration:\n%v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "configuration is valid: %d listeners, %d routes, %d clusters, %d components, %d subscriptions\n",
		len(cfg.Listeners), len(cfg.Routes), len(cfg.Clusters), len(cfg.Components), len(cfg.Subscriptions))
	return 0
}

// NewLogger builds the process logger: daprd's fields (app_id, instance,
// scope, type, ver), console or JSON.
func NewLogger(cfg *config.Config, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	level := zap.NewAtomicLevel()
	if cfg.LogLevel != "" {
		if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
			return nil, level, fmt.Errorf("log_level: %w", err)
		}
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.MessageKey = "msg"
	ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	var enc zapcore.Encoder
	if cfg.LogAsJSON {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	host, _ := os.Hostname()
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	log := zap.New(core).With(zap.String("app_id", cfg.AppID), zap.String("instance", host),
		zap.String("type", "log"), zap.String("ver", Version))
	return log, level, nil
}

func run(cfg *config.Config, stderr io.Writer, dropped []string) int {
	if os.Getenv("GOGC") == "" {
		// Fewer collections on the request path; the heap of a sidecar is small.
		debug.SetGCPercent(400)
	}
	log, level, err := NewLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard: %v\n", err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	admin.Level = &level
	rlog := log.With(zap.String("scope", "switchyard.runtime"))
	if len(dropped) > 0 {
		rlog.Info("not in this build, left out of the built-in defaults", zap.Strings("left_out", dropped))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rt := &listeners.Runtime{Logger: log, Version: Version, Stats: stats.NewRegistry("dapr_"), Shutdown: stop}
	sizeProcs(ctx, rlog, cfg, rt.Stats)
	rt.Health.SetAppReady(cfg.AppPort == 0)
	drain := cfg.GracefulShutdown.D()
	if drain <= 0 {
		drain = 5 * time.Second
	}
	mgr := listeners.NewManager(rt, drain)
	if err := mgr.Apply(ctx, config.NewSnapshot(cfg, "flags")); err != nil {
		rlog.Error("failed to start", zap.Error(err))
		_ = mgr.Close(context.Background())
		return 1
	}
	rt.Health.SetOutboundReady(true)

	unannounce := announce(rlog, cfg, mgr)
	if cfg.AppPort != 0 {
		go waitForApp(ctx, rlog, cfg, rt)
	} else {
		rlog.Info("switchyard initialized, no app port", zap.Duration("init_elapsed", time.Since(started)))
		releaseStartupCode(rlog)
	}

	<-ctx.Done()
	rlog.Info("shutting down", zap.Duration("grace", drain))
	rt.Health.SetOutboundReady(false)
	if unannounce != nil {
		if err := unannounce(); err != nil {
			rlog.Warn("withdrawing from name resolution", zap.Error(err))
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := mgr.Close(sctx); err != nil {
		rlog.Warn("shutdown", zap.Error(err))
	}
	rlog.Info("stopped")
	return 0
}

// sizeProcs sets the sidecar's P count: GOMAXPROCS from the environment
// wins, then --procs; by default internal/procs starts on one P and adds
// more while they stay busy. The gauge runtime_procs follows it.
func sizeProcs(ctx context.Context, log *zap.Logger, cfg *config.Config, reg *stats.Registry) {
	g := reg.Gauge("runtime_procs", "The number of Ps (Go's GOMAXPROCS) switchyard runs on now.").With()
	defer func() { g.Set(int64(runtime.GOMAXPROCS(0))) }()
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if cfg.Procs > 0 {
		runtime.GOMAXPROCS(cfg.Procs)
		return
	}
	procs.Start(ctx, procs.Policy{Min: 1, Max: runtime.GOMAXPROCS(0)}, procs.Window, func(from, to int, cores float64) {
		g.Set(int64(to))
		log.Debug("procs", zap.Int("from", from), zap.Int("to", to), zap.Float64("busy_cores", cores))
	})
}

// waitForApp dials the app port until it accepts, then marks the sidecar ready.
func waitForApp(ctx context.Context, log *zap.Logger, cfg *config.Config, rt *listeners.Runtime) {
	host := cfg.AppChannelAddress
	if host == "" {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.AppPort))
	var d net.Dialer
	wait := time.Millisecond
	for logged := false; ; {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if ctx.Err() != nil {
			return
		}
		if !logged && time.Since(started) > 2*time.Second {
			log.Info("waiting for the application", zap.String("address", addr))
			logged = true
		}
		time.Sleep(wait)
		wait = min(wait*2, 100*time.Millisecond)
	}
	log.Info(fmt.Sprintf("application discovered on port %d", cfg.AppPort))
	rt.Health.SetAppReady(true)
	log.Info("switchyard initialized. Status: Running", zap.Duration("init_elapsed", time.Since(started)),
		zap.Float64("init_elapsed_ms", float64(time.Since(started).Microseconds())/1000))
	releaseStartupCode(log)
}

// releaseStartupCode gives back the mappings of the code start-up touched
// (internal/codepages): what runs again is mapped back on first use.
func releaseStartupCode(log *zap.Logger) {
	if n, err := codepages.Release(); err != nil {
		log.Debug("releasing start-up code pages", zap.Error(err))
	} else {
		log.Debug("released start-up code pages", zap.Int("bytes", n))
	}
}

// announce registers this sidecar with the name-resolution scheme, when the
// scheme has a registration side and there is an internal listener.
func announce(log *zap.Logger, cfg *config.Config, mgr *listeners.Manager) func() error {
	b, ok := resolver.Get(cfg.NameResolution.Scheme)
	if !ok {
		return nil
	}
	an, ok := b.(resolver.Announcer)
	if !ok {
		return nil
	}
	var port int
	var host string
	for _, l := range mgr.Describe() {
		if l.Kind == config.ListenerInternal && len(l.Addresses) > 0 {
			h, p, _ := net.SplitHostPort(l.Addresses[0])
			host = h
			port, _ = strconv.Atoi(p)
		}
	}
	if port == 0 {
		return nil
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	stop, err := an.Announce(resolver.Instance{AppID: cfg.AppID, Namespace: cfg.Namespace, Host: host, InternalPort: port,
		HTTPPort: cfg.DaprHTTPPort, AppPort: cfg.AppPort}, resolver.BuildOptions{Logger: log, Config: cfg.NameResolution.Config})
	if err != nil {
		log.Warn("could not announce this sidecar", zap.String("scheme", cfg.NameResolution.Scheme), zap.Error(err))
		return nil
	}
	log.Info("announced in name resolution", zap.String("scheme", cfg.NameResolution.Scheme), zap.String("address", net.JoinHostPort(host, strconv.Itoa(port))))
	return stop
}
