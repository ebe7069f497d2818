package clustertest

import (
	"strings"
	"testing"
	"time"
)

// TestClusterCallControlsAndIdleEnd: the v1.1 call requests of a
// connection on n2 are relayed to the media node n1 like every media:*
// request (replies and errors come back); a call left without participants
// ends on its own after --media-call-idle-timeout (members get
// room:call_ended) and its lease is released: the next call/start, on n2,
// runs the call on n2.
func TestClusterCallControlsAndIdleEnd(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: []string{}})
	for i, id := range []string{"n1", "n2"} {
		c.AddNode(id, map[string]string{"PARLEY_MEDIA_ANNOUNCED_IP": announced(i + 1),
			"PARLEY_MEDIA_CALL_IDLE_TIMEOUT": "3s"})
	}
	StartAll(t, c.Nodes...)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	const room = "call-ctl"
	setupCallRoom(t, c, n1, room, "alice", "bob")
	a := n1.Dial(t, "A@n1", "alice", nil)
	b := n2.Dial(t, "B@n2", "bob", nil)

	startCall(t, c, n1, room, "alice")
	a.WaitFor(10*time.Second, "room:call_started", OfType(typeCallStarted))
	bSend, _ := mediaJoin(t, b, room)
	requireCandidate(t, b, announced(1), bSend)

	t.Log("restart_ice, get_stats, a pause of an unknown producer: relayed to n1")
	f := b.Call("media:restart_ice", map[string]string{"room_id": room, "transport_id": bSend.ID}, 10*time.Second)
	var ir struct {
		TransportID   string `json:"transport_id"`
		IceParameters struct {
			UsernameFragment string `json:"usernameFragment"`
			Password         string `json:"password"`
		} `json:"ice_parameters"`
	}
	if f.Type != "media:ice_restarted" || f.Decode(&ir) != nil || ir.TransportID != bSend.ID || ir.IceParameters.UsernameFragment == "" {
		t.Fatalf("restart_ice answered %s", f)
	}
	f = b.Call("media:get_stats", map[string]string{"room_id": room}, 10*time.Second)
	var st struct {
		Items []struct {
			Type        string `json:"type"`
			TransportID string `json:"transportId"`
			IceRestarts int    `json:"iceRestarts"`
		} `json:"items"`
	}
	if f.Type != "media:stats" || f.Decode(&st) != nil || len(st.Items) != 2 || st.Items[0].TransportID != bSend.ID || st.Items[0].IceRestarts != 1 {
		t.Fatalf("get_stats answered %s", f)
	}
	if f := b.Call("media:producer_pause", map[string]string{"room_id": room, "producer_id": "nope"}, 10*time.Second); f.ErrorCode() != CodeNotFound {
		t.Fatalf("producer_pause of an unknown producer: %s", f)
	}

	t.Log("B leaves: the empty call ends on its own, everywhere")
	if f := b.Call("media:leave", map[string]string{"room_id": room}, 10*time.Second); f.Type != "ack" {
		t.Fatalf("leave: %s", f)
	}
	for _, m := range []*Client{a, b} {
		m.WaitFor(20*time.Second, "room:call_ended", OfType(typeCallEnded))
	}
	if code, _ := n2.Do(t, "GET", "/api/rooms/"+room+"/call/participants", c.Token("bob", nil), nil); code != 404 {
		t.Fatalf("participants after the idle end: %d", code)
	}

	t.Log("n1 released the lease: a call/start on n2 runs the call on n2")
	if body := startCall(t, c, n2, room, "bob"); !strings.Contains(body, `"started":true`) {
		t.Fatalf("start after the idle end: %s", body)
	}
	s2, _ := mediaJoin(t, a, room)
	requireCandidate(t, a, announced(2), s2)
}
