package grpcwire

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchyard-proxy/switchyard/filters"
)

func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("status %v has no ErrorInfo (details %v)", st, st.Details())
	return nil
}

func TestStatus(t *testing.T) {
	denied := filters.NewError(filters.ErrCodePermissionDenied, http.StatusForbidden, codes.PermissionDenied, "access denied by policy")
	cases := []struct {
		name     string
		err      error
		kind     filters.Kind
		code     codes.Code
		msg      string
		reason   string
		httpCode string
	}{
		{"filters.Error", denied, filters.KindInvoke, codes.PermissionDenied, "access denied by policy", filters.ErrCodePermissionDenied, "403"},
		{"wrapped filters.Error", fmt.Errorf("acl: %w", denied), filters.KindInvoke, codes.PermissionDenied, "access denied by policy", filters.ErrCodePermissionDenied, "403"},
		{"plain error on invoke", errors.New("boom"), filters.KindInvoke, codes.Internal, "boom", filters.ErrCodeDirectInvoke, "500"},
		{"plain error on publish", errors.New("boom"), filters.KindPublish, codes.Internal, "boom", filters.ErrCodePubSubPublish, "500"},
		{"filters.Error without a gRPC code", &filters.Error{Code: "ERR_X", HTTPStatus: 418, Message: "teapot"}, filters.KindInvoke, codes.Internal, "teapot", "ERR_X", "418"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := Status(tc.err, tc.kind)
			if st.Code() != tc.code || st.Message() != tc.msg {
				t.Fatalf("status %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			info := errorInfo(t, st)
			if info.GetReason() != tc.reason || info.GetDomain() != Domain || info.GetMetadata()[MetaHTTPCode] != tc.httpCode {
				t.Fatalf("ErrorInfo %v", info)
			}
		})
	}
	t.Run("a gRPC status passes through", func(t *testing.T) {
		in := status.New(codes.Unavailable, "upstream down")
		st := Status(in.Err(), filters.KindInvoke)
		if st.Code() != codes.Unavailable || st.Message() != "upstream down" || len(st.Details()) != 0 {
			t.Fatalf("status %v %q %v", st.Code(), st.Message(), st.Details())
		}
	})
}

// TestErrorFromStatusRoundTrip: what one sidecar answers (Status) the
// calling sidecar turns back into the same Dapr code and HTTP status.
func TestErrorFromStatusRoundTrip(t *testing.T) {
	for _, e := range []*filters.Error{
		filters.NewError(filters.ErrCodePermissionDenied, 403, codes.PermissionDenied, "denied"),
		filters.NewError(filters.ErrCodeTooManyRequests, 429, codes.ResourceExhausted, "slow down"),
		filters.NewError(filters.ErrCodeNotFound, 404, codes.NotFound, "no such method"),
	} {
		got, answered := ErrorFromStatus(Status(e, filters.KindInvoke))
		if !answered || got.Code != e.Code || got.HTTPStatus != e.HTTPStatus || got.GRPCCode != e.GRPCCode || got.Message != e.Message {
			t.Errorf("%s: got %+v answered=%v", e.Code, got, answered)
		}
		if status.Code(got.Err) != e.GRPCCode {
			t.Errorf("%s: cause %v", e.Code, got.Err)
		}
	}
}

func TestErrorFromStatus(t *testing.T) {
	foreign, _ := status.New(codes.NotFound, "x").WithDetails(&errdetails.ErrorInfo{Reason: "ERR_OTHER", Domain: "example.com", Metadata: map[string]string{MetaHTTPCode: "418"}})
	cases := []struct {
		name     string
		st       *status.Status
		code     string
		http     int
		answered bool
	}{
		{"transport status", status.New(codes.Unavailable, "connection refused"), filters.ErrCodeDirectInvoke, 503, false},
		{"deadline", status.New(codes.DeadlineExceeded, "deadline"), filters.ErrCodeDirectInvoke, 504, false},
		{"another domain's ErrorInfo is ignored", foreign, filters.ErrCodeDirectInvoke, 404, false},
		{"app's HTTP answer keeps its status", HTTPResponseStatus(400, []byte("bad input")), filters.ErrCodeDirectInvoke, 400, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, answered := ErrorFromStatus(tc.st)
			if e.Code != tc.code || e.HTTPStatus != tc.http || answered != tc.answered || e.GRPCCode != tc.st.Code() {
				t.Fatalf("got %+v answered=%v", e, answered)
			}
		})
	}
}

func TestHTTPResponseStatus(t *testing.T) {
	for _, c := range []int{200, 201, 204, 299} {
		if st := HTTPResponseStatus(c, []byte("x")); st != nil {
			t.Errorf("%d: got %v, want nil", c, st)
		}
	}
	long := strings.Repeat("a", 100)
	cases := []struct {
		name string
		code int
		body string
		gc   codes.Code
		msg  string
		errm string
	}{
		{"not found", 404, "no route", codes.NotFound, "Not Found", "no route"},
		{"bad request is Internal, as daprd", 400, "bad", codes.Internal, "Bad Request", "bad"},
		{"body cut at 63 bytes", 500, long, codes.Unknown, "Internal Server Error", long[:63]},
		{"unlisted status", 418, "", codes.Unknown, "I'm a teapot", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := HTTPResponseStatus(tc.code, []byte(tc.body))
			if st.Code() != tc.gc || st.Message() != tc.msg {
				t.Fatalf("status %v %q", st.Code(), st.Message())
			}
			info := errorInfo(t, st)
			if info.GetMetadata()[MetaHTTPCode] != fmt.Sprint(tc.code) || info.GetMetadata()[MetaHTTPErr] != tc.errm || info.GetDomain() != Domain {
				t.Fatalf("ErrorInfo %v", info)
			}
		})
	}
}

// TestHTTPResponseStatusKeepsDetailsForAnyBody: the ErrorInfo (and with it
// the app's HTTP status, which the caller's sidecar answers with) must
// survive bodies that are not UTF-8 or whose cut splits a character;
// protobuf refuses to marshal invalid UTF-8 strings.
func TestHTTPResponseStatusKeepsDetailsForAnyBody(t *testing.T) {
	cases := map[string]string{
		"binary body":         "\x89PNG\r\n\x1a\n\x00\xff\xfe",
		"cut inside a rune":   strings.Repeat("a", 62) + "é and more",
		"multibyte, long":     strings.Repeat("日本", 40),
		"invalid then ascii":  "\xc3(" + strings.Repeat("x", 10),
		"valid short unicode": "überall",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			st := HTTPResponseStatus(400, []byte(body))
			info := errorInfo(t, st)
			if info.GetMetadata()[MetaHTTPCode] != "400" {
				t.Fatalf("ErrorInfo %v", info)
			}
			msg := info.GetMetadata()[MetaHTTPErr]
			if !utf8.ValidString(msg) || (utf8.ValidString(body) && len(msg) > 63) {
				t.Fatalf("error message %q", msg)
			}
			if utf8.ValidString(body) && !strings.HasPrefix(body, msg) {
				t.Fatalf("error message %q is not the start of the body", msg)
			}
			if e, _ := ErrorFromStatus(st); e.HTTPStatus != 400 {
				t.Fatalf("the caller would answer %d, want 400", e.HTTPStatus)
			}
		})
	}
}

func TestCodeMapping(t *testing.T) {
	// daprd's tables (grpc-gateway for code -> HTTP; its own for HTTP -> code).
	toHTTP := map[codes.Code]int{
		codes.OK: 200, codes.Canceled: 408, codes.Unknown: 500, codes.InvalidArgument: 400,
		codes.DeadlineExceeded: 504, codes.NotFound: 404, codes.AlreadyExists: 409, codes.PermissionDenied: 403,
		codes.ResourceExhausted: 429, codes.FailedPrecondition: 400, codes.Aborted: 409, codes.OutOfRange: 400,
		codes.Unimplemented: 501, codes.Internal: 500, codes.Unavailable: 503, codes.DataLoss: 500, codes.Unauthenticated: 401,
	}
	for c, want := range toHTTP {
		if got := HTTPStatusFromCode(c); got != want {
			t.Errorf("HTTPStatusFromCode(%v) = %d, want %d", c, got, want)
		}
	}
	toCode := map[int]codes.Code{
		200: codes.OK, 201: codes.OK, 204: codes.OK, 408: codes.Canceled, 500: codes.Unknown, 400: codes.Internal,
		504: codes.DeadlineExceeded, 404: codes.NotFound, 409: codes.AlreadyExists, 403: codes.PermissionDenied,
		401: codes.Unauthenticated, 429: codes.ResourceExhausted, 501: codes.Unimplemented, 503: codes.Unavailable,
		302: codes.Unknown, 418: codes.Unknown, 502: codes.Unknown,
	}
	for s, want := range toCode {
		if got := CodeFromHTTPStatus(s); got != want {
			t.Errorf("CodeFromHTTPStatus(%d) = %v, want %v", s, got, want)
		}
	}
}

func TestVerb(t *testing.T) {
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"} {
		if got := Verb(VerbOf([]byte(m))); got != m {
			t.Errorf("Verb(VerbOf(%s)) = %s", m, got)
		}
	}
	if Verb(commonv1pb.HTTPExtension_NONE) != "POST" {
		t.Error("NONE (a gRPC caller) must be POST")
	}
	if Verb(commonv1pb.HTTPExtension_Verb(99)) != "POST" {
		t.Error("an unknown verb must be POST")
	}
	if VerbOf([]byte("get")) != commonv1pb.HTTPExtension_POST || VerbOf([]byte("PROPFIND")) != commonv1pb.HTTPExtension_POST {
		t.Error("methods that are not HTTPExtension verbs must be POST")
	}
}

func TestRouteMethodAndPeerAddr(t *testing.T) {
	for in, want := range map[string]string{"/pkg.Svc/M": "pkg.Svc/M", "pkg.Svc/M": "pkg.Svc/M", "": "", "/": ""} {
		if got := RouteMethod(in); got != want {
			t.Errorf("RouteMethod(%q) = %q, want %q", in, got, want)
		}
	}
	cases := []struct {
		name string
		p    *peer.Peer
		want netip.Addr
	}{
		{"nil peer", nil, netip.Addr{}},
		{"no address", &peer.Peer{}, netip.Addr{}},
		{"ipv4", &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}}, netip.MustParseAddr("127.0.0.1")},
		{"ipv6", &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("::1"), Port: 5000}}, netip.MustParseAddr("::1")},
		{"ipv4 in 4 bytes", &peer.Peer{Addr: &net.TCPAddr{IP: net.IP{10, 0, 0, 7}, Port: 5000}}, netip.MustParseAddr("10.0.0.7")},
		{"ipv6 with zone", &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 5000, Zone: "eth0"}}, netip.MustParseAddr("fe80::1%eth0")},
		{"udp", &peer.Peer{Addr: &net.UDPAddr{IP: net.IPv4(10, 0, 0, 8), Port: 53}}, netip.MustParseAddr("10.0.0.8")},
		{"unix socket", &peer.Peer{Addr: &net.UnixAddr{Name: "/tmp/s", Net: "unix"}}, netip.Addr{}},
	}
	for _, tc := range cases {
		if got := PeerAddr(tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func BenchmarkPeerAddr(b *testing.B) {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}}
	b.ReportAllocs()
	for b.Loop() {
		_ = PeerAddr(p)
	}
}

func BenchmarkStatus(b *testing.B) {
	err := filters.NewError(filters.ErrCodePermissionDenied, 403, codes.PermissionDenied, "denied")
	b.ReportAllocs()
	for b.Loop() {
		_ = Status(err, filters.KindInvoke)
	}
}

func BenchmarkErrorFromStatus(b *testing.B) {
	st := Status(filters.NewError(filters.ErrCodePermissionDenied, 403, codes.PermissionDenied, "denied"), filters.KindInvoke)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = ErrorFromStatus(st)
	}
}
