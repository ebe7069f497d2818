package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// peerKnown reports whether n still tracks id (it drops a node once its
// key is deleted).
func peerKnown(n *Node, id string) bool {
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	return n.reg.peers[id] != nil
}

// keyGone reports whether id's key is missing from the registry bucket.
func keyGone(n *Node, id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := n.nodesKV.Get(ctx, id)
	return errors.Is(err, jetstream.ErrKeyNotFound)
}

// A node that stops heartbeating without deregistering (its NATS
// connection closes, as with kill -9) is declared dead by every other
// node after DeadAfter of silence, not before: NodeDown once on each, its
// key deleted from the bucket (self-cleaning), Alive false. Against the
// embedded server and NATS 2.9.
func TestRegistryDeadDetection(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		cluster := newCluster(t, url)
		a, ra := join(t, url, cluster, "a")
		c, rc := join(t, url, cluster, "c")
		b, _ := join(t, url, cluster, "b")
		waitFor(t, 5*time.Second, "every node alive everywhere", func() bool {
			return a.Alive("b") && c.Alive("b") && b.Alive("a") && a.Alive("c") && a.Alive("a")
		})
		if a.Alive("nobody") {
			t.Fatal("an unknown node is alive")
		}
		start := time.Now()
		kill(b)
		waitFor(t, 5*time.Second, "NodeDown(b) on a and c", func() bool {
			return ra.count("down:b") == 1 && rc.count("down:b") == 1
		})
		took := time.Since(start)
		// Silence since the last heartbeat received: at least DeadAfter
		// minus one heartbeat period.
		if took < fastDeadAfter-fastHeartbeat {
			t.Fatalf("b declared dead after %s, before dead-after (%s)", took, fastDeadAfter)
		}
		t.Logf("killed node declared dead after %s (heartbeat %s, dead-after %s)", took, fastHeartbeat, fastDeadAfter)
		if a.Alive("b") || c.Alive("b") {
			t.Fatal("a dead node is alive")
		}
		waitFor(t, 5*time.Second, "b's key deleted and forgotten", func() bool {
			return keyGone(a, "b") && !peerKnown(a, "b") && !peerKnown(c, "b")
		})
		if n := ra.count("down:b") + rc.count("down:b"); n != 2 {
			t.Fatalf("NodeDown(b) reported %d times on two nodes, want once each", n)
		}
		if ra.count("down:c") != 0 || rc.count("down:a") != 0 || !a.Alive("c") {
			t.Fatalf("a live node was declared dead: a %v, c %v", ra.all(), rc.all())
		}
		if ra.concurrent.Load()+rc.concurrent.Load() != 0 {
			t.Fatal("handler called from two goroutines at once")
		}
	})
}

// Drain: the other nodes report NodeDown at once (long before DeadAfter),
// Alive is false everywhere, and neither the draining node's further
// heartbeats nor its Leave report it again. Against the embedded server
// and NATS 2.9.
func TestRegistryDrain(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		cluster := newCluster(t, url)
		slow := func(o *Options) { o.DeadAfter = 10 * time.Second }
		a, ra := join(t, url, cluster, "a", slow)
		b, rb := join(t, url, cluster, "b", slow)
		waitFor(t, 5*time.Second, "b alive on a", func() bool { return a.Alive("b") })

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := b.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "NodeDown(b) on a", func() bool { return ra.count("down:b") == 1 })
		t.Logf("drain reported after %s", time.Since(start))
		if a.Alive("b") || b.Alive("b") {
			t.Fatal("a draining node is alive")
		}
		if !b.Alive("a") || rb.count("down:a") != 0 {
			t.Fatal("the draining node lost sight of the others")
		}
		// b keeps heartbeating (draining) for a while: no second report.
		rev := b.reg.ownRev()
		waitFor(t, 5*time.Second, "three more heartbeats of b", func() bool { return b.reg.ownRev() >= rev+3 })
		if err := b.Leave(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Leave(ctx); err != nil {
			t.Fatalf("second Leave: %v", err)
		}
		waitFor(t, 5*time.Second, "b forgotten by a", func() bool { return !peerKnown(a, "b") && keyGone(a, "b") })
		if n := ra.count("down:b"); n != 1 {
			t.Fatalf("NodeDown(b) reported %d times, want 1: %v", n, ra.all())
		}
	})
}

// A node that leaves without draining (Close) is reported at once too.
func TestRegistryLeaveWithoutDrain(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	slow := func(o *Options) { o.DeadAfter = 10 * time.Second }
	a, ra := join(t, url, cluster, "a", slow)
	b, _ := join(t, url, cluster, "b", slow)
	waitFor(t, 5*time.Second, "b alive on a", func() bool { return a.Alive("b") })
	// Join with a context without deadline (as server.New may pass).
	c, err := Join(context.Background(), Options{URL: url, ClusterName: cluster, NodeID: "c", Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = b.Close()
	waitFor(t, 2*time.Second, "NodeDown(b) on a", func() bool { return ra.count("down:b") == 1 })
	if a.Alive("b") {
		t.Fatal("a departed node is alive")
	}
}

// A second node with the id of a live one refuses to start (the live one
// answers its ping); one with the id of a crashed one (no responders)
// takes the key over at once, without waiting for DeadAfter or the ping
// timeout. Against the embedded server and NATS 2.9.
func TestDuplicateNodeID(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		cluster := newCluster(t, url)
		a, _ := join(t, url, cluster, "twin")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := Join(ctx, Options{URL: url, ClusterName: cluster, NodeID: "twin", Log: testLog()})
		if err == nil || !strings.Contains(err.Error(), `a node with id "twin" is alive in cluster "`+cluster+`"`) {
			t.Fatalf("second live twin: %v", err)
		}
		if err := a.Healthy(); err != nil || !a.Alive("twin") {
			t.Fatalf("the first twin suffered: %v", err)
		}

		kill(a)
		start := time.Now()
		b, _ := join(t, url, cluster, "twin", func(o *Options) { o.DeadAfter = 10 * time.Second })
		if took := time.Since(start); took >= pingTimeout {
			t.Fatalf("taking over a crashed node's id took %s", took)
		} else {
			t.Logf("crashed node's id taken over in %s", took)
		}
		e, err := b.nodesKV.Get(ctx, "twin")
		if err != nil || !strings.Contains(string(e.Value()), b.instance) || e.Revision() != b.reg.ownRev() {
			t.Fatalf("registry entry after the take-over: %v", err)
		}
		if err := b.Healthy(); err != nil || !b.Alive("twin") {
			t.Fatalf("the new twin: %v", err)
		}
	})
}

// A node whose key was taken over by a namesake (it was unreachable and
// did not answer the ping in time) notices at its next heartbeat: it stops
// heartbeating, answers no pings, and Healthy reports it.
func TestDisplacedNode(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, _ := join(t, url, cluster, "twin")
	obs, _ := join(t, url, cluster, "observer")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Stand-in for a namesake that took the key over.
	e, err := a.nodesKV.Get(ctx, "twin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.nodesKV.Update(ctx, "twin", []byte(`{"id":"twin","state":"alive","instance":"other"}`), e.Revision()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "Healthy to report the take-over", func() bool {
		err := a.Healthy()
		return err != nil && strings.Contains(err.Error(), "another process took over node id")
	})
	select {
	case <-a.Displaced():
	default:
		t.Fatal("Displaced not closed for a displaced node")
	}
	if a.Alive("twin") {
		t.Fatal("a displaced node is alive")
	}
	if _, err := a.nc.Request(a.subj.nodePing("twin"), []byte("x"), 200*time.Millisecond); err == nil {
		t.Fatal("a displaced node answers pings")
	}
	_ = a.Close()
	if e, err := obs.nodesKV.Get(ctx, "twin"); err != nil || !strings.Contains(string(e.Value()), `"other"`) {
		t.Fatalf("the displaced node's Close touched the namesake's key: %v", err)
	}
}

// A node whose key was deleted by the others (declared dead while it was
// unreachable) registers again at its next heartbeat and gets a Resync.
func TestDeclaredDeadNodeRegistersAgain(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, ra := join(t, url, cluster, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.nodesKV.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a registered again", func() bool {
		_, err := a.nodesKV.Get(ctx, "a")
		return err == nil && ra.count("resync") == 1
	})
	if err := a.Healthy(); err != nil || !a.Alive("a") {
		t.Fatalf("after registering again: %v", err)
	}
}

// Join refuses bad options before connecting.
func TestJoinValidation(t *testing.T) {
	ctx := context.Background()
	for _, o := range []Options{
		{ClusterName: "a.b"},
		{ClusterName: strings.Repeat("c", 33)},
		{NodeID: "n 1"},
		{NodeID: "n.1"},
		{NodeID: strings.Repeat("n", 65)},
		{Heartbeat: time.Second, DeadAfter: 2 * time.Second},
		{Heartbeat: -time.Second},
	} {
		o.URL = "nats://127.0.0.1:1"
		if _, err := Join(ctx, o); err == nil || strings.Contains(err.Error(), "connect") {
			t.Errorf("%+v: %v, want a validation error", o, err)
		}
	}
}

// A node whose own heartbeats stop coming back through the registry
// (JetStream unavailable to it while core NATS works) declares nobody dead:
// everyone's silence proves nothing then. Once it hears itself again, a
// node that really died is declared dead after a full DeadAfter.
func TestNoVerdictWhileOwnHeartbeatsFail(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, ra := join(t, url, cluster, "a")
	b, _ := join(t, url, cluster, "b")
	waitFor(t, 5*time.Second, "b alive on a", func() bool { return a.Alive("b") })
	a.skipBeats.Store(true)
	waitFor(t, 5*time.Second, "a to stop trusting the registry", func() bool {
		a.reg.mu.Lock()
		defer a.reg.mu.Unlock()
		return a.reg.echoLost
	})
	kill(b)
	// Three dead-after periods of b's silence, with a sweep every 30 ms.
	deadline := time.Now().Add(3 * fastDeadAfter)
	for time.Now().Before(deadline) {
		if ra.count("down:b") != 0 {
			t.Fatal("b declared dead by a node that cannot hear itself")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resumed := time.Now()
	a.skipBeats.Store(false)
	waitFor(t, 5*time.Second, "NodeDown(b) once a hears itself again", func() bool { return ra.count("down:b") == 1 })
	if took := time.Since(resumed); took < fastDeadAfter-fastHeartbeat {
		t.Fatalf("b declared dead %s after a heard itself again, before a full dead-after", took)
	}
}

// A crashed node restarted under its id before it was declared dead (a
// supervisor restarts it at once): every other node is told the previous
// process is down (NodeDown) as soon as the new one registers, not after
// DeadAfter, so its clients leave their rooms and its rooms move.
func TestRestartedNamesakeReportsDown(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, _ := join(t, url, cluster, "twin", func(o *Options) { o.DeadAfter = time.Minute; o.Heartbeat = time.Second })
	_, rec := join(t, url, cluster, "observer", func(o *Options) { o.DeadAfter = time.Minute; o.Heartbeat = time.Second })
	waitFor(t, 5*time.Second, "observer sees the twin", func() bool { return rec.count("down:twin") == 0 && a.Alive("observer") })
	kill(a)
	join(t, url, cluster, "twin", func(o *Options) { o.DeadAfter = time.Minute; o.Heartbeat = time.Second })
	// Far below DeadAfter (a minute): the new registration is the signal.
	waitFor(t, 10*time.Second, "NodeDown for the previous twin", func() bool { return rec.count("down:twin") == 1 })
}
