// Command echohttp is an HTTP echo app for switchyard's end-to-end tests.
// Every request is answered with its body; the response reports what the
// app saw: X-Method, X-Path, X-Query, X-Caller (dapr-caller-app-id),
// X-Instance (-name) and X-Echo-<h> for every X-* request header. The
// query ?status=<code> sets the status code.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
)

func main() {
	port := flag.Int("port", 0, "port to listen on (127.0.0.1)")
	name := flag.String("name", "echohttp", "instance name reported in X-Instance")
	flag.Parse()
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("listening", ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := w.Header()
		h.Set("X-Method", r.Method)
		h.Set("X-Path", r.URL.Path)
		h.Set("X-Query", r.URL.RawQuery)
		h.Set("X-Caller", r.Header.Get("dapr-caller-app-id"))
		h.Set("X-Instance", *name)
		for k, v := range r.Header {
			if strings.HasPrefix(k, "X-") {
				h.Set("X-Echo-"+k[2:], v[0])
			}
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			h.Set("Content-Type", ct)
		}
		code := http.StatusOK
		if s := r.URL.Query().Get("status"); s != "" {
			code, _ = strconv.Atoi(s)
		}
		w.WriteHeader(code)
		_, _ = w.Write(body)
	})))
}
