// Package consul is the "consul" name-resolution scheme: sidecars register
// with the local Consul agent's HTTP API (a service with a TTL check they
// keep passing), and resolvers watch the passing instances of an app id with
// blocking queries. Names and metadata follow daprd's consul resolver, so
// daprd and switchyard sidecars can find each other: service name = app id,
// the internal gRPC port in the service meta DAPR_PORT.
package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/internal/watch"
	"github.com/switchyard-proxy/switchyard/config"
)

// Scheme is the name this package registers.
const Scheme = "consul"

const component = "resolver/consul"

// Defaults.
const (
	DefaultAddress                 = "127.0.0.1:8500"
	DefaultDaprPortMetaKey         = "DAPR_PORT" // daprd's key
	DefaultCheckTTL                = 15 * time.Second
	DefaultDeregisterCriticalAfter = time.Minute
	DefaultWaitTime                = 30 * time.Second
	DefaultTimeout                 = 5 * time.Second
)

// ErrAgent is wrapped by errors that come from the agent's answers.
var ErrAgent = errors.New("consul agent")

// Config is name_resolution.config for the consul scheme.
type Config struct {
	// Address of the agent's HTTP API, host:port.
	Address string `json:"address"`
	// Scheme of the agent's API: http or https.
	Scheme string `json:"scheme"`
	// Token is sent as X-Consul-Token.
	Token string `json:"token"`
	// Datacenter to query; empty: the agent's.
	Datacenter string `json:"datacenter"`
	// Tags and Meta are added to the registration.
	Tags []string          `json:"tags"`
	Meta map[string]string `json:"meta"`
	// DaprPortMetaKey is the meta key carrying the internal gRPC port.
	DaprPortMetaKey string `json:"dapr_port_meta_key"`
	// CheckTTL is the TTL of the registration's check; it is passed every
	// third of it.
	CheckTTL config.Duration `json:"check_ttl"`
	// DeregisterCriticalServiceAfter lets the agent remove an instance
	// whose check stayed critical (its sidecar died) that long.
	DeregisterCriticalServiceAfter config.Duration `json:"deregister_critical_service_after"`
	// WaitTime is the longest a blocking query waits for a change.
	WaitTime config.Duration `json:"wait_time"`
	// Timeout bounds every other request.
	Timeout config.Duration `json:"timeout"`
}

func (c *Config) applyDefaults() {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	if c.Scheme == "" {
		c.Scheme = "http"
	}
	if c.DaprPortMetaKey == "" {
		c.DaprPortMetaKey = DefaultDaprPortMetaKey
	}
	if c.CheckTTL == 0 {
		c.CheckTTL = config.Duration(DefaultCheckTTL)
	}
	if c.DeregisterCriticalServiceAfter == 0 {
		c.DeregisterCriticalServiceAfter = config.Duration(DefaultDeregisterCriticalAfter)
	}
	if c.WaitTime == 0 {
		c.WaitTime = config.Duration(DefaultWaitTime)
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(DefaultTimeout)
	}
}

// Validate checks the settings (after defaults).
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return fmt.Errorf("%s: address %q: want host:port: %w", component, c.Address, err)
	}
	if c.Scheme != "http" && c.Scheme != "https" {
		return fmt.Errorf("%s: scheme %q: want http or https", component, c.Scheme)
	}
	for k, d := range map[string]config.Duration{
		"check_ttl": c.CheckTTL, "deregister_critical_service_after": c.DeregisterCriticalServiceAfter,
		"wait_time": c.WaitTime, "timeout": c.Timeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s: %s must be positive", component, k)
		}
	}
	if c.CheckTTL < 3*config.Duration(time.Millisecond) {
		return fmt.Errorf("%s: check_ttl too short", component)
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

// agent is a minimal client of the endpoints we use.
type agent struct {
	base  string // scheme://address
	token string
	dc    string
	hc    *http.Client
}

func newAgent(c *Config) *agent {
	return &agent{base: c.Scheme + "://" + c.Address, token: c.Token, dc: c.Datacenter, hc: &http.Client{}}
}

// do sends a request and returns the body of a 200 answer.
func (a *agent) do(ctx context.Context, method, path string, q url.Values, body any) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := a.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	if a.token != "" {
		req.Header.Set("X-Consul-Token", a.token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.Header, &statusError{method: method, path: path, code: resp.StatusCode, body: string(bytes.TrimSpace(b))}
	}
	return b, resp.Header, nil
}

type statusError struct {
	method, path string
	code         int
	body         string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %s: status %d: %s", e.method, e.path, ErrAgent, e.code, e.body)
}

func (e *statusError) Unwrap() error { return ErrAgent }

type builder struct{}

var (
	_ resolver.Builder         = (*builder)(nil)
	_ resolver.Announcer       = (*builder)(nil)
	_ resolver.ConfigValidator = (*builder)(nil)
	_ resolver.Resolver        = (*consulResolver)(nil)
)

func init() { resolver.Register(&builder{}) }

func (*builder) Scheme() string { return Scheme }

func (*builder) ValidateConfig(raw map[string]any) error {
	_, err := decode(raw)
	return err
}

// registration is the agent's service registration body.
type registration struct {
	ID      string            `json:"ID"`
	Name    string            `json:"Name"`
	Address string            `json:"Address"`
	Port    int               `json:"Port"`
	Tags    []string          `json:"Tags,omitempty"`
	Meta    map[string]string `json:"Meta"`
	Check   check             `json:"Check"`
}

type check struct {
	CheckID                        string `json:"CheckID"`
	Name                           string `json:"Name"`
	TTL                            string `json:"TTL"`
	Status                         string `json:"Status"`
	DeregisterCriticalServiceAfter string `json:"DeregisterCriticalServiceAfter"`
}

// Announce registers the instance with a passing TTL check, keeps the
// check passing (re-registering if the agent forgot the instance), and
// deregisters on stop.
func (*builder) Announce(inst resolver.Instance, opts resolver.BuildOptions) (func() error, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	if inst.AppID == "" || inst.Host == "" || inst.InternalPort < 1 || inst.InternalPort > 65535 {
		return nil, fmt.Errorf("%s: announce app id %q: need app id, host and internal port (got host %q, port %d)", component, inst.AppID, inst.Host, inst.InternalPort)
	}
	// daprd's id: <app-id>-<host>-<http port>; unique per sidecar on a host.
	idPort := inst.HTTPPort
	if idPort == 0 {
		idPort = inst.InternalPort
	}
	id := inst.AppID + "-" + inst.Host + "-" + strconv.Itoa(idPort)
	port := inst.AppPort
	if port == 0 {
		port = inst.InternalPort
	}
	meta := make(map[string]string, len(c.Meta)+1)
	for k, v := range c.Meta {
		meta[k] = v
	}
	meta[c.DaprPortMetaKey] = strconv.Itoa(inst.InternalPort)
	reg := registration{
		ID: id, Name: inst.AppID, Address: inst.Host, Port: port, Tags: c.Tags, Meta: meta,
		Check: check{
			CheckID: "daprHealth:" + id, Name: "switchyard sidecar " + id, TTL: c.CheckTTL.D().String(),
			Status: "passing", DeregisterCriticalServiceAfter: c.DeregisterCriticalServiceAfter.D().String(),
		},
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	an := &announcer{
		ag: newAgent(c), reg: reg, timeout: c.Timeout.D(), every: c.CheckTTL.D() / 3,
		log:  log.With(zap.String("scope", component), zap.String("app_id", inst.AppID)),
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	if err := an.register(); err != nil {
		return nil, fmt.Errorf("%s: announce app id %q: %w", component, inst.AppID, err)
	}
	go an.run()
	return an.stop, nil
}

type announcer struct {
	ag      *agent
	reg     registration
	timeout time.Duration
	every   time.Duration
	log     *zap.Logger
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
	stopErr error
}

func (an *announcer) call(method, path string, body any) error {
	ctx, cancel := context.WithTimeout(context.Background(), an.timeout)
	defer cancel()
	_, _, err := an.ag.do(ctx, method, path, nil, body)
	return err
}

func (an *announcer) register() error {
	return an.call(http.MethodPut, "/v1/agent/service/register", an.reg)
}

func (an *announcer) run() {
	defer close(an.done)
	t := time.NewTicker(an.every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-an.quit:
			return
		case <-t.C:
		}
		err := an.call(http.MethodPut, "/v1/agent/check/pass/"+url.PathEscape(an.reg.Check.CheckID), nil)
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusNotFound {
			// The agent forgot us (restarted, or deregistered us as
			// critical): register again.
			err = an.register()
		}
		// A background loop has no caller: log once per failure streak.
		if err != nil && !failing {
			an.log.Warn("consul check update failed", zap.Error(err))
		}
		failing = err != nil
	}
}

func (an *announcer) stop() error {
	an.once.Do(func() {
		close(an.quit)
		<-an.done
		if err := an.call(http.MethodPut, "/v1/agent/service/deregister/"+url.PathEscape(an.reg.ID), nil); err != nil {
			an.stopErr = fmt.Errorf("%s: withdraw app id %q: %w", component, an.reg.Name, err)
		}
	})
	return an.stopErr
}

// Build watches the passing instances of the app id with blocking queries.
func (*builder) Build(target resolver.Target, sink resolver.Sink, opts resolver.BuildOptions) (resolver.Resolver, error) {
	c, err := decode(opts.Config)
	if err != nil {
		return nil, err
	}
	if target.AppID == "" {
		return nil, fmt.Errorf("%s: empty app id", component)
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &consulResolver{target: target, ag: newAgent(c), metaKey: c.DaprPortMetaKey, wait: c.WaitTime.D()}
	r.w = watch.Start(watch.Config{
		Sink:   sink,
		Lookup: r.lookup,
		// The blocking query itself waits for changes; the loop only
		// re-issues it.
		Interval: time.Millisecond,
		Timeout:  c.WaitTime.D() + c.WaitTime.D()/16 + c.Timeout.D(),
		EmptyError: watch.TargetError(component, target,
			fmt.Errorf("no passing instance of service %q in consul: %w", target.AppID, resolver.ErrNoAddresses)),
		Logger: log.With(zap.String("scope", component), zap.String("app_id", target.AppID)),
	})
	return r, nil
}

type consulResolver struct {
	target  resolver.Target
	ag      *agent
	metaKey string
	wait    time.Duration
	w       *watch.Watcher

	// Only the watch loop's goroutine touches these.
	index    uint64
	failures int
}

func (r *consulResolver) ResolveNow() { r.w.ResolveNow() }
func (r *consulResolver) Close()      { r.w.Close() }

type healthEntry struct {
	Node struct {
		Address string `json:"Address"`
	} `json:"Node"`
	Service struct {
		ID      string            `json:"ID"`
		Address string            `json:"Address"`
		Meta    map[string]string `json:"Meta"`
	} `json:"Service"`
}

const maxBackoff = 30 * time.Second

func (r *consulResolver) lookup(ctx context.Context) ([]resolver.Address, error) {
	if r.failures > 0 { // back off before asking a failing agent again
		d := min(time.Duration(1<<min(r.failures-1, 5))*time.Second, maxBackoff)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	addrs, err := r.query(ctx)
	if err != nil {
		r.failures++
		r.index = 0
		return nil, watch.TargetError(component, r.target, err)
	}
	r.failures = 0
	return addrs, nil
}

func (r *consulResolver) query(ctx context.Context) ([]resolver.Address, error) {
	q := url.Values{"passing": {"true"}}
	if r.ag.dc != "" {
		q.Set("dc", r.ag.dc)
	}
	if r.index > 0 {
		q.Set("index", strconv.FormatUint(r.index, 10))
		q.Set("wait", strconv.FormatInt(r.wait.Milliseconds(), 10)+"ms")
	}
	body, hdr, err := r.ag.do(ctx, http.MethodGet, "/v1/health/service/"+url.PathEscape(r.target.AppID), q, nil)
	if err != nil {
		return nil, err
	}
	// Consul's rules for X-Consul-Index: reset when it goes backwards, and
	// never block on 0.
	idx, _ := strconv.ParseUint(hdr.Get("X-Consul-Index"), 10, 64)
	if idx < r.index {
		idx = 0
	}
	r.index = idx
	var entries []healthEntry
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, fmt.Errorf("health of service %q: %w: bad answer: %w", r.target.AppID, ErrAgent, err)
	}
	out := make([]resolver.Address, 0, len(entries))
	for _, e := range entries {
		port := e.Service.Meta[r.metaKey]
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
			continue // not a sidecar registration
		}
		out = append(out, resolver.Address{Addr: net.JoinHostPort(host, port)})
	}
	if len(out) == 0 && len(entries) > 0 {
		return nil, fmt.Errorf("%d passing instance(s) of service %q, none with a valid meta %s", len(entries), r.target.AppID, r.metaKey)
	}
	return out, nil
}
