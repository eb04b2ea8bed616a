// The non-durable respond-then-relay baseline of bench/whole-chain.mjs: Mirrorplane's original
// design with nothing stored. It reads each request's body, answers 200 at once, and relays
// the request to staging in a goroutine over at most -conns keep-alive connections. A crash,
// a restart or a staging outage loses whatever is in flight: that is what durability costs
// Mirrorplane, and what this program does not pay. Standard library only.
//
//	go build -o relay relay.go
//	relay -listen 127.0.0.1:8080 -staging http://127.0.0.1:9090 -conns 64
//
// GET /_relay/stats (on the listen address) answers {"relayed":N,"failed":N,"inflight":N}.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// Hop-by-hop fields are the connection's, not the request's (RFC 9110 §7.6.1).
var hopByHop = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	staging := flag.String("staging", "http://127.0.0.1:9090", "staging origin (scheme://host:port)")
	conns := flag.Int("conns", 64, "most connections to staging")
	flag.Parse()

	transport := &http.Transport{
		MaxConnsPerHost:     *conns,
		MaxIdleConnsPerHost: *conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	var relayed, failed, inflight atomic.Int64

	relay := func(method, target, host string, header http.Header, body []byte) {
		defer inflight.Add(-1)
		req, err := http.NewRequest(method, *staging+target, bytes.NewReader(body))
		if err != nil {
			failed.Add(1)
			return
		}
		req.Header = header
		// The mirrored Host, as Mirrorplane and nginx's mirror send it.
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			failed.Add(1)
			return
		}
		// Drained and closed, so the connection goes back to the pool.
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		relayed.Add(1)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/_relay/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, `{"relayed":%d,"failed":%d,"inflight":%d}`, relayed.Load(), failed.Load(), inflight.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		header := make(http.Header, len(r.Header))
		for name, values := range r.Header {
			if !hopByHop[name] {
				header[name] = values
			}
		}
		inflight.Add(1)
		go relay(r.Method, r.URL.RequestURI(), r.Host, header, body)
		w.Header().Set("content-length", "0")
		w.WriteHeader(http.StatusOK)
	})

	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 75 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.Close()
	}()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("relay: %v", err)
	}
	// The start-up line the benchmark waits for: the bound address.
	fmt.Printf("relay listening %s\n", ln.Addr())
	if err := server.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatalf("relay: %v", err)
	}
}
