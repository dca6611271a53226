package grpc

import (
	"testing"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-proxy/switchyard/filters"
)

func invokeRequest() *runtimev1pb.InvokeServiceRequest {
	return &runtimev1pb.InvokeServiceRequest{Id: "orders", Message: &commonv1pb.InvokeRequest{
		Method: "neworder", ContentType: "application/json", Data: &anypb.Any{Value: []byte(`{"id":1}`)},
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_PUT, Querystring: "a=1&b=2"},
	}}
}

func TestDecodeInvoke(t *testing.T) {
	cases := []struct {
		name                          string
		in                            *runtimev1pb.InvokeServiceRequest
		key, verb, query, ctype, body string
	}{
		{"full", invokeRequest(), "/invoke/orders/method/neworder", "PUT", "a=1&b=2", "application/json", `{"id":1}`},
		{"no http extension is POST", &runtimev1pb.InvokeServiceRequest{Id: "x", Message: &commonv1pb.InvokeRequest{Method: "m/n"}},
			"/invoke/x/method/m/n", "POST", "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex := filters.AcquireExchange(true)
			defer filters.ReleaseExchange(ex)
			DecodeInvoke(ex, tc.in)
			if string(ex.Key) != tc.key || string(ex.Req.Header.Method()) != tc.verb ||
				string(ex.Req.URI().QueryString()) != tc.query || string(ex.Req.Body()) != tc.body {
				t.Fatalf("key %q verb %q query %q body %q", ex.Key, ex.Req.Header.Method(), ex.Req.URI().QueryString(), ex.Req.Body())
			}
			if tc.ctype != "" && string(ex.Req.Header.ContentType()) != tc.ctype {
				t.Fatalf("content type %q", ex.Req.Header.ContentType())
			}
		})
	}
}

func TestBulkBody(t *testing.T) {
	b, err := BulkBody([]*runtimev1pb.BulkPublishRequestEntry{
		{EntryId: "1", Event: []byte(`{"a":1}`), ContentType: "application/json"},
		{EntryId: "2", Event: []byte("plain"), ContentType: "text/plain", Metadata: map[string]string{"k": "v"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"entryId":"1","event":{"a":1},"contentType":"application/json"},{"entryId":"2","event":"plain","contentType":"text/plain","metadata":{"k":"v"}}]`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
}

func BenchmarkDecodeInvoke(b *testing.B) {
	in := invokeRequest()
	b.ReportAllocs()
	for b.Loop() {
		ex := filters.AcquireExchange(true)
		DecodeInvoke(ex, in)
		filters.ReleaseExchange(ex)
	}
}
