// Package local is the "local" name-resolution scheme, switchyard's
// zero-configuration default for several sidecars on one host. It needs no
// multicast and no server: each sidecar announces itself by keeping a small
// file fresh in a registry directory, and resolvers read the directory.
//
// Layout: <dir>/<namespace>/<app-id>/<host>_<port>.json, one file per
// instance, rewritten (atomically, by rename) every heartbeat and removed on
// stop. A file whose heartbeat is older than ttl belongs to a sidecar that
// died without stopping; it is ignored and removed by whoever reads it.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/internal/watch"
	"github.com/switchyard-proxy/switchyard/config"
)

// Scheme is the name this package registers.
const Scheme = "local"

const component = "resolver/local"

// Defaults.
const (
	DefaultHeartbeat = 2 * time.Second
	DefaultNamespace = "default"
	// ttl defaults to ttlFactor heartbeats.
	ttlFactor = 3
)

// Config is name_resolution.config for the local scheme.
type Config struct {
	// Dir is the registry directory; empty: DefaultDir().
	Dir string `json:"dir"`
	// Heartbeat is how often announcers refresh their file and resolvers
	// read the directory.
	Heartbeat config.Duration `json:"heartbeat"`
	// TTL is the age after which an instance's heartbeat is dead; default
	// three heartbeats.
	TTL config.Duration `json:"ttl"`
}

// DefaultDir is the registry directory when none is configured:
// $XDG_RUNTIME_DIR/switchyard/registry, or <os.TempDir()>/switchyard-registry-<uid>.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "switchyard", "registry")
	}
	return filepath.Join(os.TempDir(), "switchyard-registry-"+strconv.Itoa(os.Getuid()))
}

func (c *Config) applyDefaults() {
	if c.Dir == "" {
		c.Dir = DefaultDir()
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = config.Duration(DefaultHeartbeat)
	}
	if c.TTL == 0 {
		c.TTL = ttlFactor * c.Heartbeat
	}
}

// Validate checks the settings (after defaults).
func (c *Config) Validate() error {
	if c.Heartbeat <= 0 {
		return fmt.Errorf("%s: heartbeat must be positive", component)
	}
	if c.TTL <= c.Heartbeat {
		return fmt.Errorf("%s: ttl (%v) must be longer than heartbeat (%v)", component, c.TTL, c.Heartbeat)
	}
	return nil
}

func decode(raw map[string]any) (*Config, error) {
	var c Config
	if err := config.DecodeStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", component, err)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// record is the content of one instance file.
type record struct {
	AppID        string    `json:"app_id"`
	Namespace    string    `json:"namespace"`
	Host         string    `json:"host"`
	InternalPort int       `json:"internal_port"`
	HTTPPort     int       `json:"http_port,omitempty"`
	AppPort      int       `json:"app_port,omitempty"`
	PID          int       `json:"pid"`
	Heartbeat    time.Time `json:"heartbeat"`
}

// checkName refuses names that would leave their directory.
func checkName(what, s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") {
		return fmt.Errorf("%s: invalid %s %q", component, what, s)
	}
	return nil
}

func namespaceOf(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

type builder struct{}

var (
	_ resolver.Builder         = (*builder)(nil)
	_ resolver.Announcer       = (*builder)(nil)
	_ resolver.ConfigValidator = (*builder)(nil)
	_ resolver.Resolver        = (*localResolver)(nil)
)

func init() { resolver.Register(&builder{}) }

func (*builder) Scheme() string { return Scheme }

func (*builder) ValidateConfig(raw map[string]any) error {
	_, err := decode(raw)
	return err
}

// Announce writes the instance's file and keeps it fresh until stop, which
// removes it. The instance is findable when Announce returns.
func (*builder) Announce(inst resolver.Instance, opts resolver.BuildOptions) (func() error, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	inst.Namespace = namespaceOf(inst.Namespace)
	for _, n := range [][2]string{{"app id", inst.AppID}, {"namespace", inst.Namespace}, {"host", inst.Host}} {
		if err := checkName(n[0], n[1]); err != nil {
			return nil, err
		}
	}
	if inst.InternalPort < 1 || inst.InternalPort > 65535 {
		return nil, fmt.Errorf("%s: app id %q: invalid internal port %d", component, inst.AppID, inst.InternalPort)
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	a := &announcer{
		dir:  filepath.Join(c.Dir, inst.Namespace, inst.AppID),
		base: inst.Host + "_" + strconv.Itoa(inst.InternalPort) + ".json",
		rec: record{
			AppID: inst.AppID, Namespace: inst.Namespace, Host: inst.Host,
			InternalPort: inst.InternalPort, HTTPPort: inst.HTTPPort, AppPort: inst.AppPort,
			PID: os.Getpid(),
		},
		heartbeat: c.Heartbeat.D(),
		log:       log.With(zap.String("scope", component), zap.String("app_id", inst.AppID)),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := a.write(); err != nil {
		return nil, fmt.Errorf("%s: announce app id %q: %w", component, inst.AppID, err)
	}
	go a.run()
	return a.stop, nil
}

type announcer struct {
	dir, base string
	rec       record
	heartbeat time.Duration
	log       *zap.Logger
	quit      chan struct{}
	done      chan struct{}
	once      sync.Once
	stopErr   error
}

func (a *announcer) run() {
	defer close(a.done)
	t := time.NewTicker(a.heartbeat)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-a.quit:
			return
		case <-t.C:
			// A background loop has no caller to return to: log, once per
			// failure streak, and keep trying.
			if err := a.write(); err != nil {
				if !failing {
					a.log.Warn("registry heartbeat failed", zap.Error(err))
				}
				failing = true
			} else {
				failing = false
			}
		}
	}
}

// write replaces the file atomically: a temporary file in the same
// directory, then a rename over the old one.
func (a *announcer) write() error {
	rec := a.rec
	rec.Heartbeat = time.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(a.dir, "."+a.base+".tmp-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(a.dir, a.base)); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

func (a *announcer) stop() error {
	a.once.Do(func() {
		close(a.quit)
		<-a.done
		err := os.Remove(filepath.Join(a.dir, a.base))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			a.stopErr = fmt.Errorf("%s: withdraw app id %q: %w", component, a.rec.AppID, err)
		}
	})
	return a.stopErr
}

// Build watches the app's directory: read at start, every heartbeat and on
// ResolveNow.
func (*builder) Build(target resolver.Target, sink resolver.Sink, opts resolver.BuildOptions) (resolver.Resolver, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	target.Namespace = namespaceOf(target.Namespace)
	if err := checkName("app id", target.AppID); err != nil {
		return nil, err
	}
	if err := checkName("namespace", target.Namespace); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &localResolver{
		target: target,
		dir:    filepath.Join(c.Dir, target.Namespace, target.AppID),
		ttl:    c.TTL.D(),
	}
	r.w = watch.Start(watch.Config{
		Sink:        sink,
		Lookup:      r.lookup,
		Interval:    c.Heartbeat.D(),
		MinInterval: min(watch.DefaultMinInterval, c.Heartbeat.D()),
		EmptyError:  watch.TargetError(component, target, fmt.Errorf("no live sidecar announced in %s: %w", r.dir, resolver.ErrNoAddresses)),
		Logger:      log.With(zap.String("scope", component), zap.String("app_id", target.AppID)),
	})
	return r, nil
}

type localResolver struct {
	target resolver.Target
	dir    string
	ttl    time.Duration
	w      *watch.Watcher
}

func (r *localResolver) ResolveNow() { r.w.ResolveNow() }
func (r *localResolver) Close()      { r.w.Close() }

func (r *localResolver) lookup(context.Context) ([]resolver.Address, error) {
	entries, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // nobody ever announced: authoritative empty
	}
	if err != nil {
		return nil, watch.TargetError(component, r.target, fmt.Errorf("read registry: %w", err))
	}
	now := time.Now()
	var out []resolver.Address
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		path := filepath.Join(r.dir, name)
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			r.removeIfOld(path, now) // a temporary file left by a crash mid-write
			continue
		}
		rec, err := readRecord(path)
		if err != nil {
			r.removeIfOld(path, now)
			continue
		}
		if now.Sub(rec.Heartbeat) > r.ttl {
			r.removeIfStale(path, now)
			continue
		}
		if rec.AppID != r.target.AppID || rec.Namespace != r.target.Namespace || rec.InternalPort <= 0 {
			continue
		}
		out = append(out, resolver.Address{Addr: net.JoinHostPort(rec.Host, strconv.Itoa(rec.InternalPort))})
	}
	return out, nil
}

func readRecord(path string) (record, error) {
	var rec record
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	err = json.Unmarshal(b, &rec)
	return rec, err
}

// removeIfStale removes a dead instance's file after reading it once more,
// so that a heartbeat renamed in since the first read is not lost (a file
// removed by a narrow race comes back at the next heartbeat).
func (r *localResolver) removeIfStale(path string, now time.Time) {
	rec, err := readRecord(path)
	if err == nil && now.Sub(rec.Heartbeat) > r.ttl {
		_ = os.Remove(path)
	}
}

// removeIfOld removes an unreadable or temporary file not modified for ttl.
func (r *localResolver) removeIfOld(path string, now time.Time) {
	if fi, err := os.Stat(path); err == nil && now.Sub(fi.ModTime()) > r.ttl {
		_ = os.Remove(path)
	}
}
