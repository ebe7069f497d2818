package clustertest

import (
	"fmt"
	"testing"
	"time"
)

// TestClusterConcurrentFirstJoins reproduces a bug found while measuring
// (docs/performance.md, "Cluster"): when several clients of ONE node join
// a room nobody holds at the same moment, the node can end up with two
// instances of the room. Clients get room:state from either, a broadcast
// in one never reaches the members of the other (in `parley bench fanout`
// against a one-node cluster: 2 runs in 12 had members that received
// nothing). A likely path, in internal/rooms (cluster.go, resolve): join
// X acquires the lease and is loading the room (takeRoom: Fence + load);
// join Y reads the lease, finds this node as holder but no loaded room yet
// (owned returns nil), falls through to Acquire with the lease it read as
// prev, whose compare-and-set succeeds on this node's own fresh lease, and
// takeRoom replaces X's room (marking it gone) while X's joiners are in it.
// Fixed by serialising resolve per room on a node (rooms.Manager
// resolveLock); internal/rooms has the unit test of the same race.
func TestClusterConcurrentFirstJoins(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: []string{"n1"}})
	n1 := c.Node("n1")
	const rounds, members = 40, 11
	for round := 0; round < rounds; round++ {
		room := fmt.Sprintf("race-%d", round)
		var cs []*Client
		for i := 0; i < members; i++ {
			cs = append(cs, n1.Dial(t, fmt.Sprintf("M%d@n1#%d", i, round), fmt.Sprintf("user-%d", i), AllRooms))
		}
		// Every join is on the wire before the first room:state.
		ids := make([]string, members)
		for i, cl := range cs {
			ids[i] = cl.Request(TypeJoin, map[string]any{"room_id": room})
		}
		counts := make([]int, members) // member_count of each room:state
		for i, cl := range cs {
			f := cl.Await(ids[i], soon)
			var st RoomState
			if f.Type != TypeState || f.Decode(&st) != nil {
				t.Fatalf("round %d: %s: join answered %s (n1 is the only node: nobody else can hold the room)", round, cl.Label, f)
			}
			counts[i] = st.MemberCount
		}
		if f := cs[0].Call(TypeBroadcast, map[string]any{"room_id": room, "event": "hello"}, soon); f.Type != TypeAck {
			t.Fatalf("round %d: %s's broadcast answered %s after its join was answered with room:state", round, cs[0].Label, f)
		}
		var missing []string
		for _, cl := range cs[1:] {
			if _, err := cl.WaitForE(3*time.Second, "room:event", OfType(TypeEvent)); err != nil {
				missing = append(missing, cl.Label)
			}
		}
		if len(missing) > 0 {
			t.Fatalf("round %d: %d of %d members never got %s's broadcast: %v; member_count of each join's room:state, in join order: %v (the room exists twice on n1)",
				round, len(missing), members-1, cs[0].Label, missing, counts)
		}
		for _, cl := range cs {
			cl.Close()
		}
	}
}
