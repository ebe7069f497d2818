package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/hub"
)

// A NATS server restart (shutdown, then a new server on the same port and
// store directory): both nodes reconnect by themselves, each handler gets
// a Resync, room subscriptions and user deliveries work again, leases are
// kept, and nobody is declared dead although the restart outlasted
// nobody's heartbeat (dead detection pauses while a node is blind).
func TestResyncAfterServerRestart(t *testing.T) {
	srv := startEmbedded(t)
	url := srv.url()
	cluster := newCluster(t, url)
	var m1, m2 countMetrics
	ha, hb := hub.New(), hub.New()
	deadAfter := func(o *Options) { o.DeadAfter = 2 * time.Second }
	a, ra := join(t, url, cluster, "a", deadAfter, func(o *Options) { o.Hub = ha; o.Metrics = &m1 })
	b, rb := join(t, url, cluster, "b", deadAfter, func(o *Options) { o.Hub = hb; o.Metrics = &m2 })
	target := &rec{id: "c", user: "u"}
	hb.Add(target)
	if err := b.SubscribeRoom("r"); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	lease, err := a.Acquire(ctx, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "both alive", func() bool { return a.Alive("b") && b.Alive("a") })

	// roomDelivered publishes from a until b's handler gets one.
	var seq atomic.Int64
	roomDelivered := func(what string, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			tag := fmt.Sprintf("%s-%d", what, seq.Add(1))
			_ = a.PublishRoom("r", []byte(tag))
			for range 20 {
				if rb.count("room:r:"+tag) == 1 {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no room publication delivered within %s", what, d)
			}
		}
	}
	userDelivered := func(what string, d time.Duration) {
		t.Helper()
		before := len(target.got())
		deadline := time.Now().Add(d)
		for len(target.got()) == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing delivered to the user within %s", what, d)
			}
			a.ToUsers([]string{"u"}, []byte("x"), "")
			time.Sleep(20 * time.Millisecond)
		}
	}
	roomDelivered("before", 5*time.Second)
	userDelivered("before", 5*time.Second)

	srv.stop()
	waitFor(t, 5*time.Second, "both unhealthy", func() bool { return a.Healthy() != nil && b.Healthy() != nil })
	srv.start()
	waitFor(t, 30*time.Second, "both healthy again", func() bool { return a.Healthy() == nil && b.Healthy() == nil })
	waitFor(t, 5*time.Second, "a Resync on both", func() bool { return ra.count("resync") >= 1 && rb.count("resync") >= 1 })
	roomDelivered("after", 30*time.Second)
	userDelivered("after", 30*time.Second)
	if got, ok, err := b.Lease(ctx, "r"); err != nil || !ok || got != lease {
		t.Fatalf("lease after the restart: %+v %v %v, want %+v", got, ok, err, lease)
	}
	waitFor(t, 10*time.Second, "registry watches restarted", func() bool { return a.Alive("b") && b.Alive("a") })
	if d := ra.withPrefix("down:"); len(d) != 0 || len(rb.withPrefix("down:")) != 0 {
		t.Fatalf("nodes declared dead across a NATS restart: a %v, b %v", d, rb.withPrefix("down:"))
	}
	if m1.disconnects.Load() != 1 || m1.reconnects.Load() != 1 || m2.reconnects.Load() != 1 {
		t.Fatalf("counted disconnects %d, reconnects %d and %d", m1.disconnects.Load(), m1.reconnects.Load(), m2.reconnects.Load())
	}
	// Dead detection works again afterwards.
	kill(b)
	waitFor(t, 10*time.Second, "NodeDown(b) after the restart", func() bool { return ra.count("down:b") == 1 })
	if ra.concurrent.Load()+rb.concurrent.Load() != 0 {
		t.Fatal("handler called from two goroutines at once")
	}
}

type countMetrics struct{ disconnects, reconnects, slow atomic.Int64 }

func (c *countMetrics) NATSDisconnect()   { c.disconnects.Add(1) }
func (c *countMetrics) NATSReconnect()    { c.reconnects.Add(1) }
func (c *countMetrics) NATSSlowConsumer() { c.slow.Add(1) }

// Healthy reports an error while the NATS connection is down (so /healthz
// answers 503) and nil again once it is back.
func TestHealthyWhileDisconnected(t *testing.T) {
	srv := startEmbedded(t)
	cluster := newCluster(t, srv.url())
	a, _ := join(t, srv.url(), cluster, "a")
	if err := a.Healthy(); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	waitFor(t, 5*time.Second, "Healthy to fail", func() bool { return a.Healthy() != nil })
	if err := a.Healthy(); !strings.Contains(err.Error(), "NATS connection is") {
		t.Fatalf("Healthy: %v", err)
	}
	srv.start()
	waitFor(t, 30*time.Second, "Healthy again", func() bool { return a.Healthy() == nil })
}

// A slow room handler overflows the inbox: the dropped messages are
// logged, counted and followed by one Resync, and delivery goes on.
func TestSlowConsumerResync(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, _ := join(t, url, cluster, "a")
	var m countMetrics
	block := make(chan struct{})
	s := &slowHandler{block: block}
	b, _ := join(t, url, cluster, "b", func(o *Options) { o.Rooms = s; o.Metrics = &m })
	_ = b
	_ = a.SendNode("b", []byte("first")) // blocks b's dispatch goroutine
	waitFor(t, 5*time.Second, "the handler blocked", func() bool { return s.nodeMsgs.Load() == 1 })
	payload := make([]byte, 16)
	for range InboxSize + 1000 {
		_ = a.SendNode("b", payload)
	}
	waitFor(t, 10*time.Second, "the overflow counted", func() bool { return m.slow.Load() >= 1 })
	close(block)
	waitFor(t, 10*time.Second, "a Resync", func() bool { return s.resyncs.Load() >= 1 })
	before := s.nodeMsgs.Load()
	_ = a.SendNode("b", []byte("after"))
	waitFor(t, 10*time.Second, "delivery after the overflow", func() bool { return s.nodeMsgs.Load() > before })
}

type slowHandler struct {
	block    chan struct{}
	nodeMsgs atomic.Int64
	resyncs  atomic.Int64
}

func (s *slowHandler) NodeMessage([]byte) {
	if s.nodeMsgs.Add(1) == 1 {
		<-s.block
	}
}
func (s *slowHandler) RoomMessage(string, []byte) {}
func (s *slowHandler) NodeDown(string)            {}
func (s *slowHandler) Resync()                    { s.resyncs.Add(1) }

// With the default timings (heartbeat 2 s, dead-after 10 s), a node killed
// without deregistering is declared dead within 15 s (PROTOCOL.md §9).
func TestKilledNodeDeclaredDeadWithDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 10 s")
	}
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	defaults := func(o *Options) { o.Heartbeat, o.DeadAfter = 0, 0 }
	a, ra := join(t, url, cluster, "a", defaults)
	b, _ := join(t, url, cluster, "b", defaults)
	waitFor(t, 10*time.Second, "b alive on a", func() bool { return a.Alive("b") })
	// Kill right after a heartbeat arrived: the longest wait.
	a.reg.mu.Lock()
	rev := a.reg.peers["b"].rev
	a.reg.mu.Unlock()
	waitFor(t, 10*time.Second, "a heartbeat of b", func() bool {
		a.reg.mu.Lock()
		defer a.reg.mu.Unlock()
		return a.reg.peers["b"].rev != rev
	})
	start := time.Now()
	kill(b)
	waitFor(t, 15*time.Second, "NodeDown(b) within 15 s", func() bool { return ra.count("down:b") == 1 })
	took := time.Since(start)
	t.Logf("killed node declared dead after %s (heartbeat %s, dead-after %s)", took.Round(time.Millisecond), DefaultHeartbeat, DefaultDeadAfter)
	if took < DefaultDeadAfter-DefaultHeartbeat {
		t.Fatalf("declared dead after %s, before dead-after", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waitFor(t, 5*time.Second, "b's key deleted", func() bool { _, err := a.nodesKV.Get(ctx, "b"); return err != nil })
}
