// Command oci-registry serves an in-memory OCI registry (the distribution API, from
// go-containerregistry's pkg/registry) on a loopback address, for the realstack tests'
// OCIRepository charts: Helm pushes a chart to it, source-controller pulls it.
//
// It prints one line "oci-registry: listening on http://ADDR" once it accepts
// connections, so a launcher that asked for port 0 can read the port it got. Every
// request is logged to stderr. It refuses to listen on anything but a loopback address,
// and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback host:port to listen on (port 0: any free port)")
	blobs := flag.String("blobs-dir", "", "keep blobs in this directory instead of in memory")
	flag.Parse()
	if err := run(*addr, *blobs); err != nil {
		fmt.Fprintf(os.Stderr, "oci-registry: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, blobsDir string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr %q: only loopback addresses are served (127.0.0.0/8, ::1, localhost)", addr)
	}
	logger := log.New(os.Stderr, "oci-registry: ", log.LstdFlags|log.Lmicroseconds)
	opts := []registry.Option{registry.Logger(logger)}
	if blobsDir != "" {
		if err := os.MkdirAll(blobsDir, 0o755); err != nil {
			return fmt.Errorf("-blobs-dir: %w", err)
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(blobsDir)))
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	server := &http.Server{Handler: registry.New(opts...), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	fmt.Fprintf(os.Stderr, "oci-registry: listening on http://%s\n", listener.Addr())

	select {
	case err := <-served:
		return fmt.Errorf("serving on %s: %w", listener.Addr(), err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}
