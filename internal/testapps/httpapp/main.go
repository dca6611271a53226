// Command httpapp is the HTTP app used by switchyard's end-to-end tests. It
// echoes what it received as JSON (method, path, query, headers, body), and
// serves a few behaviours by path:
//
//	/status/<code>   answer with that status code
//	/slow?ms=N       wait N ms before answering
//	/dapr/subscribe  the subscriptions given with -subscribe (JSON)
//	/events/...      record a delivered event; GET /received lists them
//
// It prints "listening on <addr>" once it accepts connections.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   string              `json:"query"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	subscribe := flag.String("subscribe", "[]", "JSON answered on GET /dapr/subscribe")
	eventStatus := flag.Int("event-status", 200, "status answered to deliveries")
	flag.Parse()

	var mu sync.Mutex
	var received []json.RawMessage
	mux := http.NewServeMux()
	mux.HandleFunc("/dapr/subscribe", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(*subscribe))
	})
	mux.HandleFunc("/received", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(received)
	})
	mux.HandleFunc("/events/", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(b)
		mu.Lock()
		received = append(received, json.RawMessage(b))
		mu.Unlock()
		w.WriteHeader(*eventStatus)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			n, _ := strconv.Atoi(code)
			w.Header().Set("X-App", "httpapp")
			w.WriteHeader(n)
			_, _ = w.Write([]byte("status " + code))
			return
		}
		if r.URL.Path == "/slow" {
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		var body strings.Builder
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			body.Write(buf[:n])
			if err != nil {
				break
			}
		}
		e := echo{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Host: r.Host, Headers: r.Header, Body: body.String()}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-App", "httpapp")
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(e)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	_ = http.Serve(ln, mux)
}
