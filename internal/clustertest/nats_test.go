package clustertest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestClusterRoomEventNATSDeliveries checks docs/cluster.md's cost of a
// room event: "one publish and one NATS delivery per node that has
// clients in the room, not one per node of the cluster".
//
// Method. The embedded NATS server runs in this process, so the test reads
// its own counters instead of trusting the nodes:
//
//   - deliveries: Connz with subscription details gives, for every
//     subscription of every connection, SubDetail.Msgs, the number of
//     messages the server queued for that subscription. Nodes are told
//     apart by their connection name ("parley <cluster> <id>"), and only
//     subscriptions on the room's own subject <cluster>.room.<token> are
//     counted, so heartbeats, KV traffic, node messages (requests to the
//     owner and its answers) and other rooms cannot blur the count.
//   - publications: a monitor connection of the test subscribes to
//     <cluster>.room.> and counts what it receives per subject: one per
//     publication (its own deliveries are on another connection and not
//     counted above).
//
// Each phase sends K room:broadcast (half from a client on the owner n1,
// half from a client on another node, so both the owner's direct path and
// the forwarded one are covered), waits until every receiver has every
// event and the counters have reached their expected values, then waits
// quiet and reads them again: exactly K publications on the room's subject
// and exactly K deliveries to each node with clients in the room (the
// owner gets its own publication back, NATS echo, and drops it), none to
// the others (they have no subscription on the subject at all), i.e.
// deliveries per event = number of nodes with clients in the room. The
// phases: clients on n1 and n2 (2 of 3 nodes; n3 has a client in another
// room), then also on n3 (3), then n3's client leaves again (back to 2:
// the node unsubscribed), and a second room with both clients on n2 (1).
func TestClusterRoomEventNATSDeliveries(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	mon := c.NATS.StartMonitor(t, c.Name+".room.>")
	const K = 200 // broadcasts per phase

	room := "nats-cost"
	a := n1.Dial(t, "A@n1", "alice", AllRooms)
	a.Join(room, nil)
	if owner, _, ok := c.RoomOwner(t, room); !ok || owner != "n1" {
		t.Fatalf("room %s: owner %q (held %v) after A@n1 joined first, want n1", room, owner, ok)
	}
	b := n2.Dial(t, "B@n2", "bob", AllRooms)
	b.Join(room, nil)
	z := n3.Dial(t, "Z@n3", "zed", AllRooms) // a live client on n3, in another room
	z.Join("elsewhere", nil)

	// want: deliveries per node on the room's subject; subs: the nodes
	// subscribed to it; pubs: publications on it.
	phase := func(name, room string, senders, receivers []*Client, want map[string]int64, subs []string, pubs int64) {
		t.Helper()
		subj := RoomSubject(c.Name, room)
		// The subscriptions the phase expects are in place (a node
		// subscribes on its first local client in the room and
		// unsubscribes after its last one left).
		waitSubscribed(t, c, subj, subs)
		before := quietCounters(t, c, mon, subj)
		pubs0 := mon.Count(subj)
		got0 := map[*Client]int{}
		for _, r := range receivers {
			got0[r] = count(r, OfType(TypeEvent))
		}
		// Send K broadcasts, pipelined, spread over the senders.
		ids := map[*Client][]string{}
		for i := 0; i < K; i++ {
			s := senders[i%len(senders)]
			ids[s] = append(ids[s], s.Request(TypeBroadcast, map[string]any{"room_id": room, "event": map[string]any{"phase": name, "i": i}}))
		}
		for s, list := range ids {
			for _, id := range list {
				if f := s.Await(id, soon); f.Type != TypeAck {
					t.Fatalf("%s: %s: broadcast %s answered %s", name, s.Label, id, f)
				}
			}
		}
		// Every receiver gets every event it did not send.
		for _, r := range receivers {
			want := got0[r] + K - len(ids[r])
			if err := r.WaitUntilE(soon, fmt.Sprintf("%d room:event", want), func(fs []Frame) bool {
				n := 0
				for _, f := range fs {
					if f.Type == TypeEvent {
						n++
					}
				}
				return n >= want
			}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		// Publications on the room's subject.
		if _, err := mon.WaitCount(subj, pubs0+pubs, soon); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var total int64
		for _, v := range want {
			total += v
		}
		// Deliveries: wait until the expected total is reached, then for
		// quiet, and read the final counts.
		deadline := time.Now().Add(soon)
		for {
			var sum int64
			for _, v := range c.Deliveries(t, before, c.NATS.Counters(t), subj) {
				sum += v
			}
			if sum >= total || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
		after := quietCounters(t, c, mon, subj)
		published := mon.Count(subj) - pubs0
		got := c.Deliveries(t, before, after, subj)
		subscribed := c.Subscribed(after, subj)
		var delivered int64
		for _, v := range got {
			delivered += v
		}
		t.Logf("%s: %d broadcasts → %d publications on %s, %d deliveries to nodes (%.2f per event) %s; subscribed: %v; all subjects (Varz, incl. heartbeats, node messages and the monitor): in %+d out %+d",
			name, K, published, subj, delivered, float64(delivered)/float64(K), fmtDeliveries(got), subscribed, after.InMsgs-before.InMsgs, after.OutMsgs-before.OutMsgs)
		if published != pubs {
			t.Errorf("%s: %d publications on the room's subject for %d broadcasts, want %d", name, published, K, pubs)
		}
		for _, n := range c.Nodes {
			if w := want[n.ID]; got[n.ID] != w {
				t.Errorf("%s: %s received %d messages on the room's subject, want %d", name, n.ID, got[n.ID], w)
			}
		}
		if len(subscribed) != len(subs) {
			t.Errorf("%s: nodes subscribed to the room's subject: %v, want %v", name, subscribed, subs)
		}
		if delivered != total {
			t.Errorf("%s: %.2f NATS deliveries per room event, want %.2f", name, float64(delivered)/float64(K), float64(total)/float64(K))
		}
	}

	phase("clients on 2 of 3 nodes", room, []*Client{a, b}, []*Client{a, b},
		map[string]int64{"n1": K, "n2": K}, []string{"n1", "n2"}, K)

	cc := n3.Dial(t, "C@n3", "carol", AllRooms)
	cc.Join(room, nil)
	phase("clients on 3 of 3 nodes", room, []*Client{a, b}, []*Client{a, b, cc},
		map[string]int64{"n1": K, "n2": K, "n3": K}, []string{"n1", "n2", "n3"}, K)

	if f := cc.Call(TypeLeave, map[string]any{"room_id": room}, soon); f.Type == TypeError {
		t.Fatalf("C@n3 leave: %s", f)
	}
	a.WaitFor(soon, "room:left of C@n3", About(TypeLeft, cc.ConnID))
	phase("clients on 2 of 3 nodes again (n3's client left)", room, []*Client{a, b}, []*Client{a, b},
		map[string]int64{"n1": K, "n2": K}, []string{"n1", "n2"}, K)

	// The owner without clients of its own: C joins again on n3 and A
	// leaves; n1 keeps the room (it has clients elsewhere) but has no
	// edge, so no subscription: deliveries go to n2 and n3 only.
	cc.Join(room, nil)
	if f := a.Call(TypeLeave, map[string]any{"room_id": room}, soon); f.Type == TypeError {
		t.Fatalf("A@n1 leave: %s", f)
	}
	b.WaitFor(soon, "room:left of A@n1", About(TypeLeft, a.ConnID))
	if owner, _, ok := c.RoomOwner(t, room); !ok || owner != "n1" {
		t.Fatalf("room %s: owner %q (held %v) after A@n1 left, want n1 still", room, owner, ok)
	}
	phase("clients on n2 and n3, owner n1 without clients", room, []*Client{b, cc}, []*Client{b, cc},
		map[string]int64{"n2": K, "n3": K}, []string{"n2", "n3"}, K)

	// All clients of a room on its owner's node: the owner delivers in
	// process and publishes nothing (it publishes only while the room has
	// clients on other nodes), though it is subscribed.
	solo := "nats-cost-solo"
	b2 := n2.Dial(t, "B2@n2", "bea", AllRooms)
	b.Join(solo, nil)
	b2.Join(solo, nil)
	if owner, _, ok := c.RoomOwner(t, solo); !ok || owner != "n2" {
		t.Fatalf("room %s: owner %q (held %v), want n2", solo, owner, ok)
	}
	phase("clients on 1 of 3 nodes (its owner)", solo, []*Client{b, b2}, []*Client{b, b2},
		map[string]int64{}, []string{"n2"}, 0)
}

// waitSubscribed waits until exactly the nodes in want have a
// subscription on subj.
func waitSubscribed(t *testing.T, c *Cluster, subj string, want []string) {
	t.Helper()
	deadline := time.Now().Add(soon)
	for {
		got := c.Subscribed(c.NATS.Counters(t), subj)
		ok := len(got) == len(want)
		for _, id := range want {
			ok = ok && got[id] > 0
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions on %s: %v, want one for each of %v", subj, got, want)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// quietCounters waits until the room subject's publications and
// deliveries stop changing (nothing in flight), then returns a snapshot.
func quietCounters(t *testing.T, c *Cluster, mon *Monitor, subj string) Counters {
	t.Helper()
	const quiet = 300 * time.Millisecond
	deadline := time.Now().Add(soon)
	prev := c.NATS.Counters(t)
	prevPubs := mon.Count(subj)
	for {
		time.Sleep(quiet) // the quiet period being checked, not synchronisation
		cur := c.NATS.Counters(t)
		pubs := mon.Count(subj)
		changed := pubs != prevPubs
		for _, d := range c.Deliveries(t, prev, cur, subj) {
			changed = changed || d != 0
		}
		if !changed {
			return cur
		}
		if time.Now().After(deadline) {
			t.Fatalf("room subject %s never went quiet for %v (NATS connections: %s)", subj, quiet, connNames(cur))
		}
		prev, prevPubs = cur, pubs
	}
}

func fmtDeliveries(m map[string]int64) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return "(" + strings.Join(parts, " ") + ")"
}
