package apitoken

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-proxy/switchyard/config"
	"github.com/switchyard-proxy/switchyard/filters"
)

type recorder struct {
	calls    int
	sawToken bool
}

func (r *recorder) Handle(_ context.Context, ex *filters.Exchange) error {
	r.calls++
	r.sawToken = len(ex.Req.Header.Peek(Header)) > 0
	return nil
}

func build(t testing.TB, raw map[string]any) (filters.Handler, *recorder) {
	t.Helper()
	f := factory{}
	cfg := f.NewConfig()
	if err := config.DecodeStrict(raw, cfg); err != nil {
		t.Fatalf("decode: %v", err)
	}
	flt, err := f.Build(cfg, filters.Env{Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	rec := &recorder{}
	return flt.Wrap(rec), rec
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name     string
		header   []string // values of dapr-api-token; nil: absent
		wantErr  error
		wantNext bool
	}{
		{name: "match", header: []string{"s3cret"}, wantNext: true},
		{name: "missing", wantErr: ErrMissing},
		{name: "empty", header: []string{""}, wantErr: ErrMissing},
		{name: "mismatch", header: []string{"nope"}, wantErr: ErrMismatch},
		{name: "prefix of token", header: []string{"s3cre"}, wantErr: ErrMismatch},
		{name: "token plus suffix", header: []string{"s3cret!"}, wantErr: ErrMismatch},
		{name: "case differs", header: []string{"S3CRET"}, wantErr: ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rec := build(t, map[string]any{"token": "s3cret"})
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			ex.SetInvoke([]byte("orders"), []byte("neworder"))
			for _, v := range tt.header {
				ex.Req.Header.Add("Dapr-Api-Token", v)
			}
			err := h.Handle(context.Background(), ex)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				var fe *filters.Error
				if !errors.As(err, &fe) {
					t.Fatalf("err %T is not a *filters.Error", err)
				}
				if fe.Code != filters.ErrCodeUnauthorized || fe.HTTPStatus != http.StatusUnauthorized || fe.GRPCCode != codes.Unauthenticated {
					t.Fatalf("error = %+v", fe)
				}
				if !strings.HasPrefix(fe.Message, "apitoken: ") {
					t.Fatalf("message %q lacks the filter prefix", fe.Message)
				}
			} else if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if got := rec.calls == 1; got != tt.wantNext {
				t.Fatalf("next called = %v, want %v", got, tt.wantNext)
			}
			if rec.sawToken {
				t.Fatal("the token was forwarded to the next handler")
			}
		})
	}
}

func TestConfig(t *testing.T) {
	t.Setenv("SWITCHYARD_TEST_TOKEN", "from-env")
	tests := []struct {
		name    string
		raw     map[string]any
		wantErr string // substring; "" means success
		accept  string // a token the built filter must accept
	}{
		{name: "literal", raw: map[string]any{"token": "abc"}, accept: "abc"},
		{name: "from env", raw: map[string]any{"token_env": "SWITCHYARD_TEST_TOKEN"}, accept: "from-env"},
		{name: "none", raw: map[string]any{}, wantErr: "one of token and token_env"},
		{name: "both", raw: map[string]any{"token": "a", "token_env": "B"}, wantErr: "mutually exclusive"},
		{name: "env empty", raw: map[string]any{"token_env": "SWITCHYARD_TEST_TOKEN_UNSET"}, wantErr: "SWITCHYARD_TEST_TOKEN_UNSET"},
		{name: "unknown key", raw: map[string]any{"tokn": "a"}, wantErr: "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := factory{}
			cfg := f.NewConfig()
			err := config.DecodeStrict(tt.raw, cfg)
			if err == nil {
				err = cfg.(*Config).Validate()
			}
			var flt filters.Filter
			if err == nil {
				flt, err = f.Build(cfg, filters.Env{})
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "apitoken: ") && !strings.Contains(tt.wantErr, "unknown") {
					t.Fatalf("error %q lacks the filter prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			h := flt.Wrap(rec)
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			ex.Req.Header.Set(Header, tt.accept)
			if err := h.Handle(context.Background(), ex); err != nil || rec.calls != 1 {
				t.Fatalf("token %q refused: %v", tt.accept, err)
			}
		})
	}
}

func TestAllocs(t *testing.T) {
	h, _ := build(t, map[string]any{"token": "s3cret"})
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.SetInvoke([]byte("orders"), []byte("neworder"))
	ctx := context.Background()
	for _, name := range []string{"allowed", "denied"} {
		val := "s3cret"
		if name == "denied" {
			val = "wrong"
		}
		n := testing.AllocsPerRun(1000, func() {
			ex.Req.Header.Set(Header, val)
			_ = h.Handle(ctx, ex)
		})
		if n != 0 {
			t.Errorf("%s: %v allocations per request, want 0", name, n)
		}
	}
}

func BenchmarkHandle(b *testing.B) {
	h, _ := build(b, map[string]any{"token": "s3cret-token-of-some-length"})
	ex := filters.AcquireExchange(true)
	defer filters.ReleaseExchange(ex)
	ex.SetInvoke([]byte("orders"), []byte("neworder"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ex.Req.Header.Set(Header, "s3cret-token-of-some-length")
		if err := h.Handle(ctx, ex); err != nil {
			b.Fatal(err)
		}
	}
}
