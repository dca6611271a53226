package static

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/clusters/resolver"
	"github.com/switchyard-proxy/switchyard/clusters/resolver/resolvertest"
)

func TestRegistered(t *testing.T) {
	if b, ok := resolver.Get(Scheme); !ok || b.Scheme() != Scheme {
		t.Fatalf("scheme %q not registered", Scheme)
	}
}

func TestBuild(t *testing.T) {
	cfg := map[string]any{"apps": map[string]any{
		"orders":   []any{"127.0.0.1:50002", "127.0.0.1:50012"},
		"shipping": []any{},
	}}
	tests := []struct {
		name      string
		appID     string
		wantAddrs []string
		wantErr   error  // reported to the sink
		errHas    string // in the reported error
	}{
		{name: "known app", appID: "orders", wantAddrs: []string{"127.0.0.1:50002", "127.0.0.1:50012"}},
		{name: "unknown app", appID: "payments", wantErr: ErrUnknownApp, errHas: `resolver/static: app id "payments"`},
		{name: "app with no addresses", appID: "shipping", wantAddrs: []string{}, wantErr: resolver.ErrNoAddresses, errHas: `app id "shipping"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := resolver.Get(Scheme)
			s := resolvertest.NewSink()
			r, err := b.Build(resolver.Target{AppID: tc.appID}, s, resolver.BuildOptions{Config: cfg})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			t.Cleanup(r.Close)
			r.ResolveNow()
			if tc.wantAddrs != nil {
				s.WaitForAddrs(t, time.Second, tc.wantAddrs...)
			} else if n := len(s.States()); n != 0 {
				t.Fatalf("got %d states, want none", n)
			}
			if tc.wantErr == nil {
				if errs := s.Errors(); len(errs) != 0 {
					t.Fatalf("unexpected errors %v", errs)
				}
				return
			}
			err = s.WaitForError(t, time.Second, nil)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("error %q, want %v containing %q", err, tc.wantErr, tc.errHas)
			}
		})
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    map[string]any
		errHas string
	}{
		{name: "empty", cfg: nil},
		{name: "ok", cfg: map[string]any{"apps": map[string]any{"a": []any{"[::1]:1", "h:65535"}}}},
		{name: "unknown key", cfg: map[string]any{"app": map[string]any{}}, errHas: "app: unknown field"},
		{name: "no port", cfg: map[string]any{"apps": map[string]any{"a": []any{"127.0.0.1"}}}, errHas: "apps.a[0]: invalid address"},
		{name: "bad port", cfg: map[string]any{"apps": map[string]any{"a": []any{"h:0"}}}, errHas: "bad port"},
		{name: "wrong type", cfg: map[string]any{"apps": []any{"x"}}, errHas: "apps"},
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
			case err != nil && !strings.HasPrefix(err.Error(), "resolver/static: "):
				t.Fatalf("error %q lacks the component prefix", err)
			}
		})
	}
}
