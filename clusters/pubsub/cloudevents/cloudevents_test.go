package cloudevents

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"testing"
	"time"
)

var testNow = time.Date(2024, 5, 6, 7, 8, 9, 123, time.UTC)

func TestNew(t *testing.T) {
	base := Options{
		ID: "e1", Source: "orders", Topic: "orders.created", PubSub: "pubsub",
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v",
		Now: testNow,
	}
	const tail = `"id":"e1","pubsubname":"pubsub","source":"orders","specversion":"1.0","time":"2024-05-06T07:08:09Z","topic":"orders.created","traceid":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"k=v","type":"com.dapr.event.sent"}`
	with := func(f func(*Options)) Options { o := base; f(&o); return o }
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{
			name: "json payload goes into data as json",
			opts: with(func(o *Options) {
				o.DataContentType = "application/json"
				o.Data = []byte("{ \"orderId\" : 12345678901234567890,\n \"tags\": [ \"a b\", \"<x>\" ] }")
			}),
			want: `{"data":{"orderId":12345678901234567890,"tags":["a b","\u003cx\u003e"]},"datacontenttype":"application/json",` + tail,
		},
		{
			name: "json with charset parameter",
			opts: with(func(o *Options) { o.DataContentType = "Application/JSON; charset=utf-8"; o.Data = []byte(`[1,2]`) }),
			want: `{"data":[1,2],"datacontenttype":"Application/JSON; charset=utf-8",` + tail,
		},
		{
			name: "invalid json becomes a string",
			opts: with(func(o *Options) { o.DataContentType = "application/json"; o.Data = []byte(`{oops`) }),
			want: `{"data":"{oops","datacontenttype":"application/json",` + tail,
		},
		{
			name: "text payload is a string, default content type text/plain",
			opts: with(func(o *Options) { o.Data = []byte("hello \"world\"\n<&>\x01") }),
			want: `{"data":"hello \"world\"\n\u003c\u0026\u003e\u0001","datacontenttype":"text/plain",` + tail,
		},
		{
			name: "invalid utf-8 replaced",
			opts: with(func(o *Options) { o.DataContentType = "text/plain"; o.Data = []byte("a\xffb é\u2028") }),
			want: `{"data":"a\ufffdb é\u2028","datacontenttype":"text/plain",` + tail,
		},
		{
			name: "binary payload goes into data_base64",
			opts: with(func(o *Options) { o.DataContentType = "application/octet-stream"; o.Data = []byte{0, 1, 2, 0xff} }),
			want: `{"data_base64":"AAEC/w==","datacontenttype":"application/octet-stream",` + tail,
		},
		{
			name: "xml is a string",
			opts: with(func(o *Options) { o.DataContentType = "application/xml"; o.Data = []byte(`<a/>`) }),
			want: `{"data":"\u003ca/\u003e","datacontenttype":"application/xml",` + tail,
		},
		{
			name: "subject, ttl and cloudevent overrides",
			opts: with(func(o *Options) {
				o.DataContentType = "application/json"
				o.Data = []byte(`"s"`)
				o.Subject = "sub"
				o.TraceParent, o.TraceState = "", ""
				o.Metadata = map[string]string{"ttlInSeconds": "60", "CloudEvent.Type": "my.type", "cloudevent.source": "src", "cloudevent.id": "x9", "other": "1"}
			}),
			want: `{"data":"s","datacontenttype":"application/json","expiration":"2024-05-06T07:09:09Z","id":"x9","pubsubname":"pubsub","source":"src","specversion":"1.0","subject":"sub","time":"2024-05-06T07:08:09Z","topic":"orders.created","traceid":"","traceparent":"","tracestate":"","type":"my.type"}`,
		},
		{
			name: "raw payload is not wrapped",
			opts: with(func(o *Options) { o.Data = []byte("raw bytes"); o.Metadata = map[string]string{"rawPayload": "true"} }),
			want: `raw bytes`,
		},
		{
			name: "raw payload false still wraps",
			opts: with(func(o *Options) { o.Data = []byte("x"); o.Metadata = map[string]string{"rawPayload": "false"} }),
			want: `{"data":"x","datacontenttype":"text/plain",` + tail,
		},
		{
			name: "existing cloud event keeps its fields and gets topic, pubsub and trace",
			opts: with(func(o *Options) {
				o.DataContentType = "application/cloudevents+json"
				o.Data = []byte(`{"specversion":"1.0","id":"own","type":"my.type","source":"me","data":{"n":12345678901234567890},"datacontenttype":"application/json","topic":"other","ext":"keep"}`)
			}),
			want: `{"data":{"n":12345678901234567890},"datacontenttype":"application/json","ext":"keep","id":"own","pubsubname":"pubsub","source":"me","specversion":"1.0","topic":"orders.created","traceid":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"k=v","type":"my.type"}`,
		},
		{
			name: "existing cloud event gets missing fields filled",
			opts: with(func(o *Options) {
				o.DataContentType = "application/cloudevents+json"
				o.TraceParent, o.TraceState = "", ""
				o.Data = []byte(`{"data":"x","traceparent":"00-keep-01"}`)
			}),
			want: `{"data":"x","id":"e1","pubsubname":"pubsub","source":"orders","specversion":"1.0","topic":"orders.created","traceid":"","traceparent":"00-keep-01","tracestate":"","type":"com.dapr.event.sent"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			if !IsRawPayload(tc.opts.Metadata) && !json.Valid(got) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestNewMatchesEncodingJSON(t *testing.T) {
	// Our hand-written encoder must agree with encoding/json on strings.
	inputs := []string{"plain", "quote\" back\\ slash", "ctl \x00\x07\x1f\b\f\t\r\n", "html <>&", "bad \xc3\x28 utf8", "ok é ☃ 🎉", "ls \u2028 ps \u2029"}
	for _, in := range inputs {
		got := appendString(nil, in)
		want, _ := json.Marshal(in)
		if string(got) != string(want) {
			t.Errorf("appendString(%q) = %s, encoding/json %s", in, got, want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"not json", `{oops`},
		{"null", `null`},
		{"array", `[1]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{DataContentType: ContentType, Data: []byte(tc.data)})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewGeneratesIDAndTime(t *testing.T) {
	before := time.Now().UTC().Truncate(time.Second)
	b, err := New(Options{Source: "a", Topic: "t", PubSub: "p", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !uuidRE.MatchString(ev.ID) {
		t.Errorf("id %q is not a v4 uuid", ev.ID)
	}
	ts, err := time.Parse(time.RFC3339, ev.Time)
	if err != nil || ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("time %q (%v) not now", ev.Time, err)
	}
	b2, _ := New(Options{Data: []byte("x")})
	ev2, _ := Parse(b2)
	if ev2.ID == ev.ID {
		t.Error("two events got the same id")
	}
}

func TestParseAndPayload(t *testing.T) {
	tests := []struct {
		name        string
		opts        Options
		wantPayload string
		wantCT      string
	}{
		{"json", Options{DataContentType: "application/json", Data: []byte(`{"a":1}`)}, `{"a":1}`, "application/json"},
		{"json string stays json", Options{DataContentType: "application/json", Data: []byte(`"s"`)}, `"s"`, "application/json"},
		{"text", Options{Data: []byte("hi \"there\"")}, `hi "there"`, "text/plain"},
		{"binary", Options{DataContentType: "application/octet-stream", Data: []byte{0, 0xff}}, "\x00\xff", "application/octet-stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Topic, tc.opts.PubSub, tc.opts.Source = "t", "ps", "app"
			b, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Topic != "t" || ev.PubSubName != "ps" || ev.Source != "app" || ev.DataContentType != tc.wantCT || ev.Type != DefaultType {
				t.Errorf("event = %+v", ev)
			}
			p, err := ev.Payload()
			if err != nil {
				t.Fatal(err)
			}
			if string(p) != tc.wantPayload {
				t.Errorf("payload = %q, want %q", p, tc.wantPayload)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{`raw`, `{"id":"x"}`, `[]`, `{"id":"1","type":"t"}`} {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%s) err = %v, want ErrInvalid", in, err)
		}
	}
}

func TestExpired(t *testing.T) {
	b, _ := New(Options{Data: []byte("x"), Now: testNow, Metadata: map[string]string{"ttlInSeconds": "10"}})
	ev, _ := Parse(b)
	if ev.Expired(testNow.Add(5 * time.Second)) {
		t.Error("expired too early")
	}
	if !ev.Expired(testNow.Add(11 * time.Second)) {
		t.Error("not expired after ttl")
	}
}

func TestFields(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]any
	}{
		{"object data", `{"id":"1","type":"t","data":{"amount":12.5,"kind":"a"}}`,
			map[string]any{"id": "1", "type": "t", "data": map[string]any{"amount": 12.5, "kind": "a"}}},
		{"json string data is decoded", `{"datacontenttype":"application/json","data":"{\"n\":1}"}`,
			map[string]any{"datacontenttype": "application/json", "data": map[string]any{"n": 1.0}}},
		{"text data stays a string", `{"datacontenttype":"text/plain","data":"{\"n\":1}"}`,
			map[string]any{"datacontenttype": "text/plain", "data": `{"n":1}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Fields([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
	if _, err := Fields([]byte("nope")); !errors.Is(err, ErrInvalid) {
		t.Errorf("Fields(nope) err = %v", err)
	}
}

func TestFromRawPayload(t *testing.T) {
	b := FromRawPayload([]byte("hi"), "t", "ps")
	ev, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := ev.Payload()
	if string(p) != "hi" || ev.DataContentType != OctetStreamContentType || ev.Topic != "t" || ev.PubSubName != "ps" || !uuidRE.MatchString(ev.ID) {
		t.Errorf("event %+v payload %q", ev, p)
	}
}

func TestAppendAllocs(t *testing.T) {
	opts := Options{ID: "id-1", Source: "orders", Topic: "t", PubSub: "p", DataContentType: "application/json", Data: []byte(`{"orderId":1,"item":"book"}`), TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	buf := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		buf, err = Append(buf[:0], opts)
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Append allocates %v times, want 0", allocs)
	}
}

func BenchmarkNewSmallJSON(b *testing.B) {
	opts := Options{Source: "orders", Topic: "orders.created", PubSub: "pubsub", DataContentType: "application/json",
		Data: []byte(`{"orderId":1234,"item":"book","qty":2}`), TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSmallJSON(b *testing.B) {
	opts := Options{Source: "orders", Topic: "orders.created", PubSub: "pubsub", DataContentType: "application/json",
		Data: []byte(`{"orderId":1234,"item":"book","qty":2}`), TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = Append(buf[:0], opts)
	}
}
