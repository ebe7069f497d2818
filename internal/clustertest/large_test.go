package clustertest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Large rooms across nodes (PROTOCOL.md v1.1 §3 "Large rooms", §9): with
// --large-room-members 4, 12 clients spread over three nodes. Every
// client's view (room:state + room:joined/left + room:members_changed)
// converges to the real membership; paging from any node lists everyone
// once; after kill -9 of one node, the survivors' views drop its clients.
func TestClusterLargeRoom(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Env: map[string]string{
		"PARLEY_LARGE_ROOM_MEMBERS":  "4",
		"PARLEY_LARGE_ROOM_INTERVAL": "50ms",
	}})
	nodes := c.Nodes
	const room, n = "big", 12
	clients := make([]*Client, n)
	for i := range n {
		node := nodes[i%len(nodes)]
		clients[i] = node.Dial(t, fmt.Sprintf("c%d@%s", i, node.ID), fmt.Sprintf("u%d", i), AllRooms)
		st := clients[i].Join(room, nil)
		if st.MemberCount != i+1 || len(st.Members) != min(i+1, 4) {
			t.Fatalf("joiner %d: member_count %d with %d listed", i, st.MemberCount, len(st.Members))
		}
	}
	ids := map[string]int{} // client id → index
	for i, cl := range clients {
		st := firstState(t, cl)
		ids[st.ClientID] = i
	}

	// Paging from a client on every node lists every member once.
	for _, cl := range clients[n-3:] {
		seen := map[string]int{}
		after := ""
		for {
			data := map[string]any{"room_id": room, "limit": 5}
			if after != "" {
				data["after"] = after
			}
			f := cl.Call("room:members", data, 10*time.Second)
			var p struct {
				Members   []Member `json:"members"`
				NextAfter *string  `json:"next_after"`
			}
			if f.Type != "room:members_page" || f.Decode(&p) != nil {
				t.Fatalf("%s: room:members answered %s", cl.Label, f)
			}
			for _, m := range p.Members {
				seen[m.ClientID]++
			}
			if p.NextAfter == nil {
				break
			}
			after = *p.NextAfter
		}
		if len(seen) != n {
			t.Fatalf("%s paged %d members, want %d: %v", cl.Label, len(seen), n, seen)
		}
		for id, k := range seen {
			if k != 1 {
				t.Fatalf("%s: %s listed %d times", cl.Label, id, k)
			}
		}
	}

	// Every client converges on all n members and the count.
	for _, cl := range clients {
		waitView(t, cl, n, nil)
	}

	// kill -9 of the node holding c2, c5, c8, c11 (nodes[2]).
	victim := nodes[2]
	var gone []string
	for id, i := range ids {
		if i%len(nodes) == 2 {
			gone = append(gone, id)
		}
	}
	victim.Kill()
	for i, cl := range clients {
		if i%len(nodes) == 2 {
			continue
		}
		waitView(t, cl, n-len(gone), gone)
	}
}

// firstState is the client's first room:state.
func firstState(t *testing.T, c *Client) RoomState {
	t.Helper()
	for _, f := range c.Frames() {
		if f.Type == TypeState {
			var st RoomState
			if err := f.Decode(&st); err != nil {
				t.Fatal(err)
			}
			return st
		}
	}
	t.Fatalf("%s has no room:state", c.Label)
	return RoomState{}
}

// waitView waits until the client's view of the room, built as an SDK
// would (state, then joined/left/members_changed in order), counts want
// members and lists none of absent. The count is member_count of the last
// batch (or the state plus individual joins and leaves).
func waitView(t *testing.T, c *Client, want int, absent []string) {
	t.Helper()
	err := c.WaitUntilE(30*time.Second, fmt.Sprintf("a view of %d members", want), func(fs []Frame) bool {
		members, count := map[string]bool{}, 0
		for _, f := range fs {
			switch f.Type {
			case TypeState:
				var st RoomState
				_ = f.Decode(&st)
				count = st.MemberCount
				for _, m := range st.Members {
					members[m.ClientID] = true
				}
			case "room:joined":
				members[f.Field("client_id")] = true
				count++
			case "room:left":
				delete(members, f.Field("client_id"))
				count--
			case "room:members_changed":
				var d struct {
					Joined      []Member `json:"joined"`
					Left        []Member `json:"left"`
					MemberCount int      `json:"member_count"`
				}
				_ = json.Unmarshal(f.Data, &d)
				for _, m := range d.Joined {
					members[m.ClientID] = true
				}
				for _, m := range d.Left {
					delete(members, m.ClientID)
				}
				count = d.MemberCount
			}
		}
		if count != want {
			return false
		}
		for _, id := range absent {
			if members[id] {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}
