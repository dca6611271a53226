package http

import (
	"encoding/base64"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestInvokeTarget follows daprd's own cases for finding the target of an
// invocation (pkg/http: findTargetIDAndMethod).
func TestInvokeTarget(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("dapr-app-id:auth"))
	cases := []struct {
		name       string
		path       string
		header     string
		auth       string
		wantOK     bool
		wantID     string
		wantMethod string
	}{
		{name: "dapr-app-id header", path: "/foo/bar", header: "myapp", wantOK: true, wantID: "myapp", wantMethod: "foo/bar"},
		{name: "basic auth", path: "/foo/bar", auth: basic, wantOK: true, wantID: "auth", wantMethod: "foo/bar"},
		{name: "header has priority over basic auth", path: "/foo/bar", header: "myapp", auth: basic, wantOK: true, wantID: "myapp", wantMethod: "foo/bar"},
		{name: "path", path: "/v1.0/invoke/myapp/method/foo", wantOK: true, wantID: "myapp", wantMethod: "foo"},
		{name: "basic auth has priority over the path", path: "/v1.0/invoke/myapp/method/foo", auth: basic, wantOK: true, wantID: "auth", wantMethod: "v1.0/invoke/myapp/method/foo"},
		{name: "empty method", path: "/v1.0/invoke/myapp/method/", wantOK: true, wantID: "myapp", wantMethod: ""},
		{name: "missing method", path: "/v1.0/invoke/myapp/method"},
		{name: "missing id", path: "/v1.0/invoke//method/x"},
		{name: "extra slashes removed", path: "///foo//bar", header: "myapp", wantOK: true, wantID: "myapp", wantMethod: "foo/bar"},
		{name: "method with slashes", path: "/v1.0/invoke/myapp/method/a/b/c", wantOK: true, wantID: "myapp", wantMethod: "a/b/c"},
		{name: "not an invocation", path: "/v1.0/healthz"},
		{name: "basic auth of another user", path: "/foo", auth: "Basic " + base64.StdEncoding.EncodeToString([]byte("someone:x"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			if tc.header != "" {
				h.Set("dapr-app-id", tc.header)
			}
			if tc.auth != "" {
				h.Set("Authorization", tc.auth)
			}
			id, method, ok := invokeTarget([]byte(tc.path), &h)
			if ok != tc.wantOK || string(id) != tc.wantID || string(method) != tc.wantMethod {
				t.Fatalf("got (%q, %q, %v), want (%q, %q, %v)", id, method, ok, tc.wantID, tc.wantMethod, tc.wantOK)
			}
		})
	}
}
