package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/testenv"
)

func mediaEnv() map[string]string {
	return map[string]string{"PARLEY_MEDIA_LISTEN_IP": "127.0.0.1", "PARLEY_MEDIA_LOOPBACK": "true",
		"PARLEY_MEDIA_RTC_MIN_PORT": "0", "PARLEY_MEDIA_RTC_MAX_PORT": "0", "PARLEY_MEDIA_WORKERS": "1"}
}

// Call signalling over the real server: membership, REST start/join/leave/
// end, room:call_* to members, media:* replies, disconnect handling.
func TestCallSignallingThroughServer(t *testing.T) {
	s := servertest.Start(t, mediaEnv())
	ctx := context.Background()
	if err := s.Srv.Store.CreateRoom(ctx, store.Room{ID: "call", Name: "Call", OwnerID: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Srv.Store.AddMember(ctx, "call", "bob"); err != nil {
		t.Fatal(err)
	}
	s.IgnoreTypes = []string{"presence:update"}
	alice := s.DialUser("alice", nil)
	bob := s.DialUser("bob", nil)
	eve := s.DialUser("eve", nil)

	// No call yet: not_found. Not a member: forbidden.
	alice.Request("media:join", "m1", map[string]string{"room_id": "call"})
	alice.ExpectError(protocol.CodeNotFound, "m1")
	eve.Request("media:join", "m2", map[string]string{"room_id": "call"})
	eve.ExpectError(protocol.CodeForbidden, "m2")
	if code, body := s.Do("POST", "/api/rooms/call/call/start", s.Token("eve", nil), nil); code != 403 {
		t.Fatalf("non-member start: %d %s", code, body)
	}

	code, body := s.Do("POST", "/api/rooms/call/call/start", s.Token("alice", nil), nil)
	if code != 200 || !strings.Contains(string(body), `"started":true`) || !strings.Contains(string(body), `"rtp_capabilities"`) {
		t.Fatalf("start: %d %s", code, body)
	}
	for _, c := range []*servertest.Client{alice, bob} {
		if f := c.Expect(protocol.TypeRoomCallStarted); !strings.Contains(string(f.Data), `"started_by":"alice"`) {
			t.Fatalf("call_started = %s", f.Data)
		}
	}
	// Idempotent: a second start notifies nobody.
	if code, _ := s.Do("POST", "/api/rooms/call/call/start", s.Token("bob", nil), nil); code != 200 {
		t.Fatalf("second start: %d", code)
	}
	alice.ExpectNothing()
	bob.ExpectNothing()
	eve.ExpectNothing()

	alice.Request("media:join", "j1", map[string]string{"room_id": "call"})
	alice.Expect("media:router_capabilities")
	var tc struct {
		SendTransport struct {
			ID            string          `json:"id"`
			ICEParameters json.RawMessage `json:"iceParameters"`
			ICECandidates []any           `json:"iceCandidates"`
			DTLS          json.RawMessage `json:"dtlsParameters"`
		} `json:"send_transport"`
		RecvTransport struct {
			ID string `json:"id"`
		} `json:"recv_transport"`
		ICEServers []any `json:"ice_servers"`
		ForceRelay bool  `json:"force_relay"`
	}
	if f := alice.ExpectInto("media:transport_created", &tc); f.ID != "j1" {
		t.Fatalf("transport_created id %q", f.ID)
	}
	if tc.SendTransport.ID == "" || tc.RecvTransport.ID == "" || len(tc.SendTransport.ICECandidates) == 0 || tc.ICEServers == nil {
		t.Fatalf("transport_created = %+v", tc)
	}
	for _, c := range []*servertest.Client{alice, bob} {
		if f := c.Expect(protocol.TypeRoomCallUpdated); !strings.Contains(string(f.Data), `"participant_count":1`) {
			t.Fatalf("call_updated = %s", f.Data)
		}
	}
	// Participants over REST.
	code, body = s.Do("GET", "/api/rooms/call/call/participants", s.Token("bob", nil), nil)
	if code != 200 || !strings.Contains(string(body), alice.ConnID) {
		t.Fatalf("participants: %d %s", code, body)
	}
	// REST join for bob's connection; a connection that is not his is refused.
	if code, body := s.Do("POST", "/api/rooms/call/call/join", s.Token("bob", nil), map[string]string{"connection_id": alice.ConnID}); code != 404 {
		t.Fatalf("join with another user's connection: %d %s", code, body)
	}
	if code, body := s.Do("POST", "/api/rooms/call/call/join", s.Token("bob", nil), map[string]string{"connection_id": bob.ConnID}); code != 200 {
		t.Fatalf("REST join: %d %s", code, body)
	}
	for _, c := range []*servertest.Client{alice, bob} {
		if f := c.Expect(protocol.TypeRoomCallUpdated); !strings.Contains(string(f.Data), `"participant_count":2`) {
			t.Fatalf("call_updated = %s", f.Data)
		}
	}
	// Bad signalling changes nothing.
	alice.Request("media:connect_transport", "c1", map[string]any{"room_id": "call", "transport_id": "nope",
		"dtls_parameters": map[string]any{"role": "client", "fingerprints": []map[string]string{{"algorithm": "sha-256", "value": strings.Repeat("AB:", 31) + "AB"}}}})
	alice.ExpectError(protocol.CodeNotFound, "c1")
	alice.Request("media:produce", "p1", map[string]any{"room_id": "call", "transport_id": tc.SendTransport.ID, "kind": "smell", "rtp_parameters": map[string]any{}})
	alice.ExpectError(protocol.CodeBadRequest, "p1")
	bob.ExpectNothing()

	// Alice's WebSocket closes: bob sees peer_left (if he joined media) and
	// the count drops.
	_ = alice.WS.Close()
	var sawUpdate bool
	deadline := time.Now().Add(5 * time.Second)
	for !sawUpdate && time.Now().Before(deadline) {
		f, ok := bob.Next(5 * time.Second)
		if !ok {
			break
		}
		if f.Type == protocol.TypeRoomCallUpdated && strings.Contains(string(f.Data), `"participant_count":1`) {
			sawUpdate = true
		}
	}
	if !sawUpdate {
		t.Fatal("no call_updated after disconnect")
	}
	// End: bob (a participant) gets media:room_closed, members room:call_ended.
	if code, body := s.Do("POST", "/api/rooms/call/call/end", s.Token("bob", nil), nil); code != 200 {
		t.Fatalf("end: %d %s", code, body)
	}
	expectSet(t, bob, "media:room_closed", protocol.TypeRoomCallEnded)
	if code, _ := s.Do("POST", "/api/rooms/call/call/end", s.Token("bob", nil), nil); code != 404 {
		t.Fatalf("second end: %d", code)
	}
}

// With --media-tcp-port the transports also offer a passive TCP candidate.
func TestCallOffersICETCPWhenConfigured(t *testing.T) {
	env := mediaEnv()
	port := testenv.FreePort(t, "tcp")
	env["PARLEY_MEDIA_TCP_PORT"] = fmt.Sprint(port)
	s := servertest.Start(t, env)
	s.IgnoreTypes = []string{"presence:update", protocol.TypeRoomCallStarted, protocol.TypeRoomCallUpdated}
	if err := s.Srv.Store.CreateRoom(context.Background(), store.Room{ID: "tcp", Name: "TCP", OwnerID: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	alice := s.DialUser("alice", nil)
	if code, body := s.Do("POST", "/api/rooms/tcp/call/start", s.Token("alice", nil), nil); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	alice.Request("media:join", "j", map[string]string{"room_id": "tcp"})
	alice.Expect("media:router_capabilities")
	var tc struct {
		SendTransport struct {
			ICECandidates []struct {
				Protocol string `json:"protocol"`
				Port     int    `json:"port"`
				TCPType  string `json:"tcpType"`
			} `json:"iceCandidates"`
		} `json:"send_transport"`
	}
	alice.ExpectInto("media:transport_created", &tc)
	var udp, tcp int
	for _, c := range tc.SendTransport.ICECandidates {
		switch {
		case c.Protocol == "udp":
			udp++
		case c.Protocol == "tcp" && c.Port == port && c.TCPType == "passive":
			tcp++
		}
	}
	if udp == 0 || tcp == 0 {
		t.Fatalf("candidates %+v: want udp and passive tcp on %d", tc.SendTransport.ICECandidates, port)
	}
}
