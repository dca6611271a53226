package dns

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/resolvertest"
)

// zone is a tiny authoritative DNS server on 127.0.0.1 whose records the
// test changes while resolvers watch it.
type zone struct {
	mu   sync.Mutex
	a    map[string][]string // fqdn -> IPv4
	srv  map[string][]*mdns.SRV
	addr string
}

func startZone(t *testing.T) *zone {
	t.Helper()
	z := &zone{a: map[string][]string{}, srv: map[string][]*mdns.SRV{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &mdns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	return z
}

func (z *zone) setA(name string, ips ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if ips == nil {
		delete(z.a, mdns.Fqdn(name))
		return
	}
	z.a[mdns.Fqdn(name)] = ips
}

func (z *zone) setSRV(name string, targets ...*mdns.SRV) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.srv[mdns.Fqdn(name)] = targets
}

func (z *zone) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	ips, hasA := z.a[name]
	srvs, hasSRV := z.srv[name]
	if !hasA && !hasSRV {
		m.Rcode = mdns.RcodeNameError
	}
	hdr := func(t uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: q.Name, Rrtype: t, Class: mdns.ClassINET, Ttl: 1}
	}
	switch q.Qtype {
	case mdns.TypeA:
		for _, ip := range ips {
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr(mdns.TypeA), A: net.ParseIP(ip)})
		}
	case mdns.TypeSRV:
		for _, s := range srvs {
			rr := *s
			rr.Hdr = hdr(mdns.TypeSRV)
			m.Answer = append(m.Answer, &rr)
		}
	}
	_ = w.WriteMsg(m)
}

func build(t *testing.T, z *zone, target resolver.Target, cfg map[string]any) (*resolvertest.Sink, resolver.Resolver) {
	t.Helper()
	cfg["server"] = z.addr
	b, ok := resolver.Get(Scheme)
	if !ok {
		t.Fatalf("scheme %q not registered", Scheme)
	}
	s := resolvertest.NewSink()
	r, err := b.Build(target, s, resolver.BuildOptions{Config: cfg})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(r.Close)
	return s, r
}

func srvRR(target string, port uint16) *mdns.SRV {
	return &mdns.SRV{Target: mdns.Fqdn(target), Port: port, Priority: 10, Weight: 1}
}

func TestResolve(t *testing.T) {
	const wait = 5 * time.Second
	orders := resolver.Target{AppID: "orders", Namespace: "prod"}
	tests := []struct {
		name string
		cfg  map[string]any
		run  func(t *testing.T, z *zone, s *resolvertest.Sink, r resolver.Resolver)
	}{
		{
			name: "A records with the default template, change picked up by refresh",
			cfg:  map[string]any{"refresh_interval": "50ms"},
			run: func(t *testing.T, z *zone, s *resolvertest.Sink, _ resolver.Resolver) {
				s.WaitForAddrs(t, wait, "10.0.0.1:50002", "10.0.0.2:50002")
				z.setA("orders-dapr.prod.svc.cluster.local", "10.0.0.3")
				s.WaitForAddrs(t, wait, "10.0.0.3:50002")
			},
		},
		{
			name: "SRV records, ports from the answer, change picked up",
			cfg:  map[string]any{"srv": true, "template": "_internal._tcp.{app-id}.{namespace}.example", "refresh_interval": "50ms"},
			run: func(t *testing.T, z *zone, s *resolvertest.Sink, _ resolver.Resolver) {
				s.WaitForAddrs(t, wait, "10.0.1.1:7001", "10.0.1.2:7002")
				z.setSRV("_internal._tcp.orders.prod.example", srvRR("b.example", 7002), srvRR("c.example", 7003))
				s.WaitForAddrs(t, wait, "10.0.1.2:7002", "10.0.1.3:7003")
			},
		},
		{
			name: "failure reports the app id and keeps the last good addresses",
			cfg:  map[string]any{"refresh_interval": "50ms"},
			run: func(t *testing.T, z *zone, s *resolvertest.Sink, _ resolver.Resolver) {
				s.WaitForAddrs(t, wait, "10.0.0.1:50002", "10.0.0.2:50002")
				z.setA("orders-dapr.prod.svc.cluster.local")
				err := s.WaitForError(t, wait, nil)
				for _, want := range []string{`resolver/dns: app id "orders" in namespace "prod"`, "orders-dapr.prod.svc.cluster.local"} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("error %q does not contain %q", err, want)
					}
				}
				var dnsErr *net.DNSError
				if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
					t.Fatalf("error %q does not wrap a not-found *net.DNSError", err)
				}
				if last, _ := s.Last(); len(last.Addresses) != 2 {
					t.Fatalf("addresses after a failure: %v, want the last good two", resolvertest.Addrs(last))
				}
				z.setA("orders-dapr.prod.svc.cluster.local", "10.0.0.9")
				s.WaitForAddrs(t, wait, "10.0.0.9:50002")
			},
		},
		{
			name: "ResolveNow looks up again without waiting for the refresh",
			cfg:  map[string]any{"refresh_interval": "1h"},
			run: func(t *testing.T, z *zone, s *resolvertest.Sink, r resolver.Resolver) {
				s.WaitForAddrs(t, wait, "10.0.0.1:50002", "10.0.0.2:50002")
				z.setA("orders-dapr.prod.svc.cluster.local", "10.0.0.4")
				r.ResolveNow()
				s.WaitForAddrs(t, wait, "10.0.0.4:50002")
				if n := len(s.States()); n != 2 {
					t.Fatalf("got %d states, want 2", n)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := startZone(t)
			z.setA("orders-dapr.prod.svc.cluster.local", "10.0.0.1", "10.0.0.2")
			z.setSRV("_internal._tcp.orders.prod.example", srvRR("a.example", 7001), srvRR("b.example", 7002))
			z.setA("a.example", "10.0.1.1")
			z.setA("b.example", "10.0.1.2")
			z.setA("c.example", "10.0.1.3")
			s, r := build(t, z, orders, tc.cfg)
			tc.run(t, z, s, r)
		})
	}
}

func TestDefaultNamespace(t *testing.T) {
	z := startZone(t)
	z.setA("orders-dapr.default.svc.cluster.local", "10.0.0.5")
	s, _ := build(t, z, resolver.Target{AppID: "orders"}, map[string]any{})
	s.WaitForAddrs(t, 5*time.Second, "10.0.0.5:50002")
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    map[string]any
		errHas string
	}{
		{name: "defaults", cfg: nil},
		{name: "all keys", cfg: map[string]any{"template": "{app-id}.{namespace}.svc:1", "srv": false, "refresh_interval": "10s", "server": "127.0.0.1:53", "timeout": 2}},
		{name: "srv", cfg: map[string]any{"template": "_dapr._tcp.{app-id}", "srv": true}},
		{name: "unknown key", cfg: map[string]any{"servers": "x"}, errHas: "servers: unknown field"},
		{name: "unknown placeholder", cfg: map[string]any{"template": "{app}.svc:1"}, errHas: "only {app-id} and {namespace}"},
		{name: "no port", cfg: map[string]any{"template": "{app-id}.svc"}, errHas: "want host:port"},
		{name: "srv with port", cfg: map[string]any{"template": "{app-id}.svc:1", "srv": true}, errHas: "has no port"},
		{name: "bad server", cfg: map[string]any{"server": "127.0.0.1"}, errHas: "server"},
		{name: "bad duration", cfg: map[string]any{"refresh_interval": "soon"}, errHas: "invalid duration"},
		{name: "negative refresh", cfg: map[string]any{"refresh_interval": "-1s"}, errHas: "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := resolver.Get(Scheme)
			err := b.(resolver.ConfigValidator).ValidateConfig(tc.cfg)
			switch {
			case tc.errHas == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			case err != nil && !strings.HasPrefix(err.Error(), "resolver/dns: "):
				t.Fatalf("error %q lacks the component prefix", err)
			}
		})
	}
}
