package clustertest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Calls across nodes (issue 11 part 3, PROTOCOL.md §6 and §9): one call per
// room on one media node, whatever node a client or a REST call lands on.

const (
	typeCallStarted   = "room:call_started"
	typeCallUpdated   = "room:call_updated"
	typeCallEnded     = "room:call_ended"
	typeMediaJoin     = "media:join"
	typeRouterCaps    = "media:router_capabilities"
	typeTransport     = "media:transport_created"
	typeConnectTransp = "media:connect_transport"
	typeTransportConn = "media:transport_connected"
	typeRoomClosed    = "media:room_closed"
	typePeerLeft      = "media:peer_left"
)

// setupCallRoom creates room id owned by owner through node n (REST) with
// the other users as members.
func setupCallRoom(t *testing.T, c *Cluster, n *Node, id, owner string, members ...string) {
	t.Helper()
	if code, body := n.Do(t, "POST", "/api/rooms", c.Token(owner, nil), map[string]any{"id": id, "name": id}); code != 201 {
		t.Fatalf("create room %s on %s: %d %s", id, n.ID, code, body)
	}
	for _, m := range members {
		if code, body := n.Do(t, "POST", "/api/rooms/"+id+"/members", c.Token(owner, nil), map[string]string{"user_id": m}); code != 204 {
			t.Fatalf("add %s to %s: %d %s", m, id, code, body)
		}
	}
}

func startCall(t *testing.T, c *Cluster, n *Node, room, user string) string {
	t.Helper()
	code, body := n.Do(t, "POST", "/api/rooms/"+room+"/call/start", c.Token(user, nil), nil)
	if code != 200 || !strings.Contains(string(body), `"rtp_capabilities"`) {
		t.Fatalf("call/start of %s on %s by %s: %d %s", room, n.ID, user, code, body)
	}
	return string(body)
}

type transportInfo struct {
	ID             string `json:"id"`
	ICECandidates  []any  `json:"iceCandidates"`
	DTLSParameters any    `json:"dtlsParameters"`
}

// mediaJoin sends media:join and checks the answers: router capabilities,
// then transport_created carrying the request id (PROTOCOL.md §6).
func mediaJoin(t *testing.T, cl *Client, room string) (send, recv transportInfo) {
	t.Helper()
	f := cl.Call(typeMediaJoin, map[string]string{"room_id": room}, 10*time.Second)
	if f.Type != typeTransport {
		t.Fatalf("%s: media:join of %s answered %s", cl.Label, room, f)
	}
	var tc struct {
		Send transportInfo `json:"send_transport"`
		Recv transportInfo `json:"recv_transport"`
	}
	if err := f.Decode(&tc); err != nil || tc.Send.ID == "" || tc.Recv.ID == "" || len(tc.Send.ICECandidates) == 0 {
		t.Fatalf("%s: transport_created = %s (%v)", cl.Label, f.Data, err)
	}
	cl.WaitFor(5*time.Second, "media:router_capabilities", OfType(typeRouterCaps))
	return tc.Send, tc.Recv
}

func connectTransport(t *testing.T, cl *Client, room, transportID string) {
	t.Helper()
	f := cl.Call(typeConnectTransp, map[string]any{"room_id": room, "transport_id": transportID,
		"dtls_parameters": map[string]any{"role": "client", "fingerprints": []map[string]string{
			{"algorithm": "sha-256", "value": strings.TrimSuffix(strings.Repeat("AB:", 32), ":")}}}}, 10*time.Second)
	if f.Type != typeTransportConn || f.Field("transport_id") != transportID {
		t.Fatalf("%s: connect_transport answered %s", cl.Label, f)
	}
}

func countType(cl *Client, typ string) int {
	k := 0
	for _, f := range cl.Frames() {
		if f.Type == typ {
			k++
		}
	}
	return k
}

func waitCount(t *testing.T, cl *Client, room string, n int) {
	t.Helper()
	cl.WaitFor(10*time.Second, fmt.Sprintf("room:call_updated with participant_count %d", n), func(f Frame) bool {
		var d struct {
			RoomID string `json:"room_id"`
			Count  int    `json:"participant_count"`
		}
		return f.Type == typeCallUpdated && f.Decode(&d) == nil && d.RoomID == room && d.Count == n
	})
}

func participants(t *testing.T, c *Cluster, n *Node, room, user string) []string {
	t.Helper()
	code, body := n.Do(t, "GET", "/api/rooms/"+room+"/call/participants", c.Token(user, nil), nil)
	if code != 200 {
		t.Fatalf("participants of %s on %s: %d %s", room, n.ID, code, body)
	}
	var out struct {
		Items []struct {
			ConnectionID string `json:"connection_id"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("participants: %v in %s", err, body)
	}
	var ids []string
	for _, p := range out.Items {
		ids = append(ids, p.ConnectionID)
	}
	return ids
}

func peerLeft(connID string) func(Frame) bool {
	return func(f Frame) bool { return f.Type == typePeerLeft && f.Field("connection_id") == connID }
}

func roomClosed(room string) func(Frame) bool {
	return func(f Frame) bool { return f.Type == typeRoomClosed && f.Field("room_id") == room }
}

// TestClusterCallAcrossNodes: call/start on n1, media signalling from n2
// and n3 answered by n1's SFU, a second call/start on n2 joins the same
// call, REST on any node sees one call, a closed connection on n2 leaves
// it, a member removed through n3 loses the call, call/end from n3 ends it
// everywhere.
func TestClusterCallAcrossNodes(t *testing.T) {
	t.Parallel()
	// Each node announces its own (documentation) address, so the
	// candidates tell which node created a transport.
	c := New(t, Options{Nodes: []string{}})
	for i, id := range []string{"n1", "n2", "n3"} {
		c.AddNode(id, map[string]string{"PARLEY_MEDIA_ANNOUNCED_IP": announced(i + 1)})
	}
	StartAll(t, c.Nodes...)
	n1, n2, n3 := nodes3(c)
	const room = "call-x"
	setupCallRoom(t, c, n1, room, "alice", "bob", "carol")

	a := n1.Dial(t, "A@n1", "alice", nil)
	b := n2.Dial(t, "B@n2", "bob", nil)
	cc := n3.Dial(t, "C@n3", "carol", nil)
	members := []*Client{a, b, cc}

	// No call yet: media:join from n2 is not_found.
	if f := b.Call(typeMediaJoin, map[string]string{"room_id": room}, 10*time.Second); f.ErrorCode() != CodeNotFound {
		t.Fatalf("media:join before any call: %s", f)
	}

	t.Log("call/start on n1; every member gets one room:call_started")
	if body := startCall(t, c, n1, room, "alice"); !strings.Contains(body, `"started":true`) {
		t.Fatalf("start: %s", body)
	}
	for _, m := range members {
		m.WaitFor(10*time.Second, "room:call_started", OfType(typeCallStarted))
	}

	t.Log("media:join + connect_transport from n2, answered by n1's SFU")
	bSend, bRecv := mediaJoin(t, b, room)
	requireCandidate(t, b, announced(1), bSend, bRecv)
	connectTransport(t, b, room, bSend.ID)
	for _, m := range members {
		waitCount(t, m, room, 1)
	}
	aSend, _ := mediaJoin(t, a, room)
	connectTransport(t, a, room, aSend.ID)
	for _, m := range members {
		waitCount(t, m, room, 2)
	}

	t.Log("a second call/start on n2 joins the same call")
	startCall(t, c, n2, room, "bob")
	// One more participant (carol on n3) as a barrier: the media node's
	// call_updated reaches everyone after anything the start sent.
	mediaJoin(t, cc, room)
	for _, m := range members {
		waitCount(t, m, room, 3)
	}
	for _, m := range members {
		if k := countType(m, typeCallStarted); k != 1 {
			t.Fatalf("%s got %d room:call_started, want 1", m.Label, k)
		}
	}
	for _, n := range c.Nodes {
		got := strings.Join(participants(t, c, n, room, "alice"), ",")
		want := strings.Join([]string{b.ConnID, a.ConnID, cc.ConnID}, ",")
		if got != want {
			t.Fatalf("participants through %s: %s, want %s", n.ID, got, want)
		}
	}

	t.Log("data channel signalling from n2 and n3, answered by n1's SFU; announcements reach every node")
	f := b.Call("media:produce_data", map[string]any{"room_id": room, "transport_id": bSend.ID,
		"sctp_stream_parameters": map[string]any{"streamId": 0, "ordered": true}, "label": "chat"}, 10*time.Second)
	dataProducerID := f.Field("id")
	if f.Type != "media:produce_data_result" || dataProducerID == "" {
		t.Fatalf("media:produce_data from n2 answered %s", f)
	}
	for _, m := range []*Client{a, cc} {
		m.WaitFor(10*time.Second, "media:new_data_producer", func(f Frame) bool {
			return f.Type == "media:new_data_producer" && f.Field("data_producer_id") == dataProducerID &&
				f.Field("connection_id") == b.ConnID && f.Field("label") == "chat"
		})
	}
	if f := cc.Call("media:consume_data", map[string]any{"room_id": room, "data_producer_id": dataProducerID}, 10*time.Second); f.Type != "media:data_consumer_created" ||
		f.Field("data_producer_id") != dataProducerID {
		t.Fatalf("media:consume_data from n3 answered %s", f)
	}

	t.Log("a second connection of bob on n2 joins, then closes: the others get media:peer_left")
	b2 := n2.Dial(t, "B2@n2", "bob", nil)
	mediaJoin(t, b2, room)
	waitCount(t, a, room, 4)
	b2.Close()
	a.WaitFor(10*time.Second, "media:peer_left for B2", peerLeft(b2.ConnID))
	cc.WaitFor(10*time.Second, "media:peer_left for B2", peerLeft(b2.ConnID))
	waitCount(t, a, room, 3)

	t.Log("bob removed through n3: his connection on n2 gets media:room_closed, the others media:peer_left")
	if code, body := n3.Do(t, "DELETE", "/api/rooms/"+room+"/members/bob", c.Token("alice", nil), nil); code != 204 && code != 200 {
		t.Fatalf("remove bob: %d %s", code, body)
	}
	b.WaitFor(10*time.Second, "media:room_closed after removal", roomClosed(room))
	a.WaitFor(10*time.Second, "media:peer_left for bob", peerLeft(b.ConnID))
	cc.WaitFor(10*time.Second, "media:peer_left for bob", peerLeft(b.ConnID))
	if f := b.Call(typeMediaJoin, map[string]string{"room_id": room}, 10*time.Second); f.ErrorCode() != CodeForbidden {
		t.Fatalf("media:join after removal: %s", f)
	}

	t.Log("call/end from n3 ends it everywhere")
	if code, body := n3.Do(t, "POST", "/api/rooms/"+room+"/call/end", c.Token("carol", nil), nil); code != 200 {
		t.Fatalf("call/end on n3: %d %s", code, body)
	}
	for _, m := range []*Client{a, cc} {
		m.WaitFor(10*time.Second, "media:room_closed", roomClosed(room))
		m.WaitFor(10*time.Second, "room:call_ended", OfType(typeCallEnded))
	}
	for _, n := range c.Nodes {
		if code, body := n.Do(t, "POST", "/api/rooms/"+room+"/call/end", c.Token("alice", nil), nil); code != 404 {
			t.Fatalf("second call/end on %s: %d %s", n.ID, code, body)
		}
	}
	if f := cc.Call(typeMediaJoin, map[string]string{"room_id": room}, 10*time.Second); f.ErrorCode() != CodeNotFound {
		t.Fatalf("media:join after the end: %s", f)
	}

	t.Log("a new call can start anywhere (n2 this time) and is seen from n1")
	if body := startCall(t, c, n2, room, "carol"); !strings.Contains(body, `"started":true`) {
		t.Fatalf("restart: %s", body)
	}
	a.WaitFor(10*time.Second, "the second room:call_started", OfType(typeCallStarted))
	aSend, aRecv := mediaJoin(t, a, room)
	requireCandidate(t, a, announced(2), aSend, aRecv)
	waitCount(t, cc, room, 1)
}

func announced(i int) string { return fmt.Sprintf("198.51.100.%d", i) }

// requireCandidate checks that the transports were created by the node
// announcing ip (the call's media node), whatever node cl is on.
func requireCandidate(t *testing.T, cl *Client, ip string, ts ...transportInfo) {
	t.Helper()
	for _, tr := range ts {
		raw, _ := json.Marshal(tr.ICECandidates)
		if !strings.Contains(string(raw), `"`+ip+`"`) {
			t.Fatalf("%s on %s: transport %s candidates %s do not announce the media node's %s", cl.Label, cl.Node.ID, tr.ID, raw, ip)
		}
	}
}

// TestClusterCallNodeFailure: kill -9 of a caller's node makes the media
// node drop its participants (media:peer_left); kill -9 of the media node
// ends its call for the participants on other nodes (media:room_closed,
// room:call_ended) within PROTOCOL §9's 15 s, and a new call/start then
// lands on a live node.
func TestClusterCallNodeFailure(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	const room = "call-kill"
	setupCallRoom(t, c, n2, room, "alice", "bob", "carol")
	a := n1.Dial(t, "A@n1", "alice", nil)
	b := n2.Dial(t, "B@n2", "bob", nil)
	cc := n3.Dial(t, "C@n3", "carol", nil)
	startCall(t, c, n1, room, "alice")
	mediaJoin(t, a, room)
	mediaJoin(t, b, room)
	mediaJoin(t, cc, room)
	waitCount(t, b, room, 3)

	t.Log("kill -9 n3 (a caller's node): the others get media:peer_left for C")
	start := time.Now()
	n3.Kill()
	a.WaitFor(deadAfter, "media:peer_left for C", peerLeft(cc.ConnID))
	b.WaitFor(deadAfter, "media:peer_left for C", peerLeft(cc.ConnID))
	t.Logf("peer_left %v after the kill", time.Since(start).Round(time.Millisecond))

	t.Log("kill -9 n1 (the media node): B on n2 gets media:room_closed and room:call_ended")
	start = time.Now()
	n1.Kill()
	b.WaitFor(deadAfter, "media:room_closed", roomClosed(room))
	t.Logf("room_closed %v after the kill", time.Since(start).Round(time.Millisecond))
	b.WaitFor(10*time.Second, "room:call_ended", OfType(typeCallEnded))

	t.Log("the client rejoins: call/start lands on a live node")
	if body := startCall(t, c, n2, room, "bob"); !strings.Contains(body, `"started":true`) {
		t.Fatalf("start after the media node died: %s", body)
	}
	b.WaitFor(10*time.Second, "room:call_started", OfType(typeCallStarted))
	mediaJoin(t, b, room)
	waitCount(t, b, room, 1)
}

// TestClusterCallMediaNodeDrains: SIGTERM of the media node ends its calls
// at once: participants on other nodes get media:room_closed, members
// room:call_ended, and the next call/start lands on a live node.
func TestClusterCallMediaNodeDrains(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: []string{"n1", "n2"}})
	n1, n2 := c.Node("n1"), c.Node("n2")
	const room = "call-drain"
	setupCallRoom(t, c, n2, room, "alice", "bob")
	b := n2.Dial(t, "B@n2", "bob", nil)
	startCall(t, c, n1, room, "alice")
	mediaJoin(t, b, room)
	waitCount(t, b, room, 1)
	start := time.Now()
	n1.Term(t)
	b.WaitFor(drainRetryWindow+2*time.Second, "media:room_closed", roomClosed(room))
	b.WaitFor(5*time.Second, "room:call_ended", OfType(typeCallEnded))
	t.Logf("room_closed %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if _, ok := n1.WaitExit(20 * time.Second); !ok {
		t.Fatal("n1 did not exit after SIGTERM")
	}
	if k := countType(b, typeRoomClosed); k != 1 {
		t.Fatalf("B got %d media:room_closed, want 1", k)
	}
	if body := startCall(t, c, n2, room, "bob"); !strings.Contains(body, `"started":true`) {
		t.Fatalf("start after the drain: %s", body)
	}
}
