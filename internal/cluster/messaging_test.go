package cluster

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/hub"
)

// A node's SendNode and PublishRoom messages reach the receiver's handler
// in the order they were sent, on one goroutine; a node not subscribed to
// the room gets none of them.
func TestSendNodeAndPublishRoomKeepOrder(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, ra := join(t, url, cluster, "a")
	b, rb := join(t, url, cluster, "b")
	const room = "team:1"
	if err := b.SubscribeRoom(room); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 3000 {
		msg := fmt.Sprintf("m%d", i)
		if i%3 == 0 {
			if err := a.SendNode("b", []byte(msg)); err != nil {
				t.Fatal(err)
			}
			want = append(want, "node:"+msg)
		} else {
			if err := a.PublishRoom(room, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			want = append(want, "room:"+room+":"+msg)
		}
	}
	waitFor(t, 10*time.Second, "every message at b", func() bool { return len(rb.all()) >= len(want) })
	if got := rb.all(); !slices.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("message %d: got %q, want %q (%d received)", i, got[i], want[i], len(got))
			}
		}
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	if rb.concurrent.Load() != 0 {
		t.Fatal("handler called from two goroutines at once")
	}
	if got := ra.all(); len(got) != 0 || a.recvRoom.Load() != 0 {
		t.Fatalf("the sender, not subscribed, received %d events, %d room messages", len(got), a.recvRoom.Load())
	}
	if err := a.SendNode("no.such", nil); err == nil {
		t.Fatal("SendNode to an invalid node id accepted")
	}
}

// Interest: a node receives the publications of the rooms it subscribes
// to, and nothing of the others (counted on the wire, not only in the
// handler); subscribing twice is one subscription; after UnsubscribeRoom
// nothing more arrives; a node's own publications reach it when it is
// subscribed.
func TestRoomInterest(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, _ := join(t, url, cluster, "a")
	b, rb := join(t, url, cluster, "b")
	for range 2 {
		if err := b.SubscribeRoom("r1"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		_ = a.PublishRoom("r2", []byte(fmt.Sprint(i)))
	}
	_ = a.PublishRoom("r1", []byte("fence"))
	waitFor(t, 5*time.Second, "the r1 publication at b", func() bool { return rb.count("room:r1:fence") == 1 })
	// a's publications arrive in order, so r2's would have come first.
	if n := b.recvRoom.Load(); n != 1 {
		t.Fatalf("b received %d room messages, want 1 (r1 once; nothing of r2)", n)
	}
	_ = b.PublishRoom("r1", []byte("own"))
	waitFor(t, 5*time.Second, "b's own publication", func() bool { return rb.count("room:r1:own") == 1 })

	if err := b.UnsubscribeRoom("r1"); err != nil {
		t.Fatal(err)
	}
	if err := b.UnsubscribeRoom("r1"); err != nil {
		t.Fatalf("second unsubscribe: %v", err)
	}
	for i := range 100 {
		_ = a.PublishRoom("r1", []byte(fmt.Sprint(i)))
	}
	_ = a.SendNode("b", []byte("fence"))
	waitFor(t, 5*time.Second, "the node message at b", func() bool { return rb.count("node:fence") == 1 })
	if n := b.recvRoom.Load(); n != 2 {
		t.Fatalf("b received %d room messages in all, want 2", n)
	}
	if got := rb.withPrefix("room:"); len(got) != 2 {
		t.Fatalf("room events %v", got)
	}
}

// User interest: a node subscribes to a user's subject on the user's first
// connection and unsubscribes on the last, so a node without connections
// of a user receives nothing for that user (counted on the wire).
func TestUserInterest(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	ha, hb := hub.New(), hub.New()
	a, _ := join(t, url, cluster, "a", func(o *Options) { o.Hub = ha })
	b, _ := join(t, url, cluster, "b", func(o *Options) { o.Hub = hb })
	ua := &rec{id: "ua", user: "u"}
	ha.Add(ua)
	vb := &rec{id: "vb", user: "v"}
	hb.Add(vb)
	if b.userSubscribed("u") || !b.userSubscribed("v") || !a.userSubscribed("u") {
		t.Fatal("subscriptions do not follow the hubs")
	}
	for i := range 50 {
		a.ToUsers([]string{"u"}, []byte(fmt.Sprint(i)), "")
	}
	a.ToUsers([]string{"v"}, []byte("fence"), "")
	waitFor(t, 5*time.Second, "the fence at b", func() bool { return len(vb.got()) == 1 })
	if n := b.recvUser.Load(); n != 1 {
		t.Fatalf("b received %d user messages, want 1 (nothing for u)", n)
	}
	if len(ua.got()) != 50 {
		t.Fatalf("u's local connection got %d frames", len(ua.got()))
	}

	// u connects to b too: b subscribes and receives.
	ub := &rec{id: "ub", user: "u"}
	hb.Add(ub)
	if !b.userSubscribed("u") {
		t.Fatal("b did not subscribe on u's first connection")
	}
	a.ToUsers([]string{"u"}, []byte("both"), "")
	waitFor(t, 5*time.Second, "u's frame on b", func() bool { return slices.Equal(ub.got(), []string{"both"}) })

	// u leaves b: b unsubscribes.
	hb.Remove(ub)
	if b.userSubscribed("u") {
		t.Fatal("b still subscribed after u's last connection")
	}
	before := b.recvUser.Load()
	for i := range 50 {
		a.ToUsers([]string{"u"}, []byte(fmt.Sprint(i)), "")
	}
	a.ToUsers([]string{"v"}, []byte("fence2"), "")
	waitFor(t, 5*time.Second, "the second fence at b", func() bool { return len(vb.got()) == 2 })
	if n := b.recvUser.Load() - before; n != 1 {
		t.Fatalf("b received %d user messages after u left, want 1", n)
	}
}

// Adds and removes of one user's connections racing on many goroutines
// leave the node subscribed exactly when the user has a connection.
func TestUserSubscriptionRace(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	h := hub.New()
	n, _ := join(t, url, cluster, "a", func(o *Options) { o.Hub = h })
	for round := range 10 {
		var wg sync.WaitGroup
		var online atomic.Int64
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &rec{id: fmt.Sprintf("c%d-%d", round, g), user: "racer"}
				in := false
				for range 30 + rand.IntN(30) {
					if in {
						h.Remove(c)
					} else {
						h.Add(c)
					}
					in = !in
				}
				if in {
					online.Add(1)
				}
			}()
		}
		wg.Wait()
		if got, want := n.userSubscribed("racer"), h.UserOnline("racer"); got != want || want != (online.Load() > 0) {
			t.Fatalf("round %d: subscribed %v, online %v (%d connections)", round, got, want, online.Load())
		}
		h.Each(func(c hub.Conn) { h.Remove(c) })
		if n.userSubscribed("racer") {
			t.Fatalf("round %d: subscribed with no connection", round)
		}
	}
}

// Two clusters on one NATS never see each other's messages, nodes or
// leases, even with the same node ids and room ids.
func TestClusterNamesIsolated(t *testing.T) {
	url := startEmbedded(t).url()
	c1, c2 := newCluster(t, url), newCluster(t, url)
	h1, h2 := hub.New(), hub.New()
	a1, _ := join(t, url, c1, "same")
	a2, r1 := join(t, url, c1, "other", func(o *Options) { o.Hub = h1 })
	b1, _ := join(t, url, c2, "same")
	b2, r2 := join(t, url, c2, "other", func(o *Options) { o.Hub = h2 })
	conn1, conn2 := &rec{id: "c1", user: "u"}, &rec{id: "c2", user: "u"}
	h1.Add(conn1)
	h2.Add(conn2)

	ctx := t.Context()
	l1, err1 := a1.Acquire(ctx, "room", nil)
	l2, err2 := b1.Acquire(ctx, "room", nil)
	if err1 != nil || err2 != nil || l1.Node != "same" || l2.Node != "same" {
		t.Fatalf("one room id in two clusters: %v %v", err1, err2)
	}
	for _, n := range []*Node{a2, b2} {
		if err := n.SubscribeRoom("room"); err != nil {
			t.Fatal(err)
		}
	}
	// From cluster 1, then cluster 2 (one server: a message fanned out to
	// both clusters' nodes would be queued to them before the next one).
	send := func(n *Node, tag string) {
		_ = n.PublishRoom("room", []byte(tag))
		_ = n.SendNode("other", []byte(tag))
		n.ToUsers([]string{"u"}, []byte(tag), "")
		n.ToAll([]byte(tag+"-all"), "")
	}
	send(a1, "one")
	waitFor(t, 5*time.Second, "cluster 1's messages", func() bool {
		return len(r1.all()) == 2 && len(conn1.got()) == 2
	})
	send(b1, "two")
	waitFor(t, 5*time.Second, "cluster 2's messages", func() bool {
		return len(r2.all()) == 2 && len(conn2.got()) == 2
	})
	send(a1, "three")
	waitFor(t, 5*time.Second, "cluster 1's second messages", func() bool {
		return len(r1.all()) == 4 && len(conn1.got()) == 4
	})
	for _, e := range r1.all() {
		if !strings.HasSuffix(e, ":one") && !strings.HasSuffix(e, ":three") {
			t.Fatalf("cluster 1 saw %v", r1.all())
		}
	}
	for _, e := range r2.all() {
		if !strings.HasSuffix(e, ":two") {
			t.Fatalf("cluster 2 saw %v", r2.all())
		}
	}
	if fmt.Sprint(conn1.got()) != "[one one-all three three-all]" || fmt.Sprint(conn2.got()) != "[two two-all]" {
		t.Fatalf("deliveries: cluster 1 %v, cluster 2 %v", conn1.got(), conn2.got())
	}

	// A drain in cluster 1 is not seen in cluster 2.
	if err := a1.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "NodeDown in cluster 1", func() bool { return r1.count("down:same") == 1 })
	if !b2.Alive("same") || a2.Alive("same") || r2.count("down:same") != 0 {
		t.Fatal("a drain crossed clusters")
	}
	if !b2.Alive("other") || b2.Alive("nobody") {
		t.Fatal("registry views mixed")
	}
}

// A panic in the room handler is contained to its message: later messages
// are still delivered, and the panic is counted.
func TestHandlerPanicContained(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	var panics countPanics
	a, _ := join(t, url, cluster, "a")
	p := &panicky{}
	_, _ = join(t, url, cluster, "b", func(o *Options) { o.Rooms = p; o.Panics = &panics })
	_ = a.SendNode("b", []byte("boom"))
	_ = a.SendNode("b", []byte("fine"))
	waitFor(t, 5*time.Second, "the message after the panic", func() bool { return p.fine.Load() == 1 })
	if panics.n.Load() != 1 {
		t.Fatalf("%d panics counted", panics.n.Load())
	}
}

type countPanics struct{ n atomic.Int64 }

func (c *countPanics) Panic(string) { c.n.Add(1) }

type panicky struct{ fine atomic.Int64 }

func (p *panicky) NodeMessage(msg []byte) {
	if string(msg) == "boom" {
		panic("boom")
	}
	p.fine.Add(1)
}
func (p *panicky) RoomMessage(string, []byte) {}
func (p *panicky) NodeDown(string)            {}
func (p *panicky) Resync()                    {}
