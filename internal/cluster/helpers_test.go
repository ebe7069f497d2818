package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// machineNATS is the NATS server installed on the machine (2.9.10, with
// JetStream); the registry and lease tests also run against it, because
// the KV features they use must work on NATS 2.9.
const machineNATS = "nats://127.0.0.1:4222"

func testLog() *slog.Logger {
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// embedded is an in-process NATS server with JetStream in a temporary
// store directory; restart brings it back on the same port and store.
type embedded struct {
	t    *testing.T
	dir  string
	port int
	ns   *natsserver.Server
}

func startEmbedded(t *testing.T) *embedded {
	t.Helper()
	e := &embedded{t: t, dir: t.TempDir(), port: -1}
	e.start()
	e.port = e.ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { e.ns.Shutdown(); e.ns.WaitForShutdown() })
	return e
}

func (e *embedded) start() {
	e.t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: e.port, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: e.dir})
	if err != nil {
		e.t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		e.t.Fatal("embedded nats-server not ready")
	}
	e.ns = ns
}

func (e *embedded) url() string { return e.ns.ClientURL() }

func (e *embedded) stop() {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
}

func (e *embedded) restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

// server is a NATS server a test runs against.
type server struct {
	name string
	url  string // "" = unreachable: skip
}

// servers returns the embedded server and the machine's NATS 2.9.10.
func servers(t *testing.T) []server {
	t.Helper()
	out := []server{{name: "embedded", url: startEmbedded(t).url()}}
	machine := server{name: "nats-2.9"}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:4222", time.Second); err == nil {
		c.Close()
		machine.url = machineNATS
	}
	return append(out, machine)
}

// forEachServer runs fn as a subtest against each server; the machine's
// server is skipped with a message when it is unreachable.
func forEachServer(t *testing.T, fn func(t *testing.T, url string)) {
	for _, s := range servers(t) {
		t.Run(s.name, func(t *testing.T) {
			if s.url == "" {
				t.Skipf("skipping: no NATS server at %s (the machine's nats-server 2.9.10 is not running)", machineNATS)
			}
			fn(t, s.url)
		})
	}
}

// newCluster returns a cluster name no other test uses, and deletes its KV
// buckets when the test ends (after its nodes closed: cleanups run last
// registered first).
func newCluster(t *testing.T, url string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, bucket := range []string{name + "_nodes", name + "_rooms"} {
			if err := js.DeleteKeyValue(ctx, bucket); err != nil && !strings.Contains(err.Error(), "not found") {
				t.Logf("deleting KV bucket %s: %v", bucket, err)
			}
		}
	})
	return name
}

// fast are registry timings for tests.
const (
	fastHeartbeat = 100 * time.Millisecond
	fastDeadAfter = 600 * time.Millisecond
)

// join starts a node with fast timings and a recorder as its room handler
// (change them with mod), closed when the test ends.
func join(t *testing.T, url, cluster, id string, mod ...func(*Options)) (*Node, *recorder) {
	t.Helper()
	rec := &recorder{}
	o := Options{URL: url, ClusterName: cluster, NodeID: id, Heartbeat: fastHeartbeat, DeadAfter: fastDeadAfter,
		Rooms: rec, Log: testLog()}
	for _, m := range mod {
		m(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := Join(ctx, o)
	if err != nil {
		t.Fatalf("join %s/%s: %v", cluster, id, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n, rec
}

// kill ends n the way kill -9 would: its NATS connection closes without
// deregistering.
func kill(n *Node) { n.nc.Close() }

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a rooms.ClusterHandler that keeps every call in order and
// notices calls that overlap (the contract is one goroutine).
type recorder struct {
	mu         sync.Mutex
	events     []string // node:<msg>, room:<id>:<msg>, down:<node>, resync
	busy       atomic.Bool
	concurrent atomic.Int64
}

func (r *recorder) add(ev string) {
	if !r.busy.CompareAndSwap(false, true) {
		r.concurrent.Add(1)
	}
	defer r.busy.Store(false)
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) NodeMessage(msg []byte) { r.add("node:" + string(msg)) }
func (r *recorder) RoomMessage(roomID string, msg []byte) {
	r.add("room:" + roomID + ":" + string(msg))
}
func (r *recorder) NodeDown(node string) { r.add("down:" + node) }
func (r *recorder) Resync()              { r.add("resync") }

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// count returns how many events equal ev.
func (r *recorder) count(ev string) int {
	n := 0
	for _, e := range r.all() {
		if e == ev {
			n++
		}
	}
	return n
}

// withPrefix returns the events that start with p.
func (r *recorder) withPrefix(p string) []string {
	var out []string
	for _, e := range r.all() {
		if strings.HasPrefix(e, p) {
			out = append(out, e)
		}
	}
	return out
}
