package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/media/mediatest"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// The wire, captured (issue 13 item 6): TestWireGolden drives a real server
// through one scenario that makes it send one example of every server
// message type it can send today, answer every REST call of PROTOCOL.md §7,
// and accept one example of every client message type. Each example is
// normalised (ids, tokens, timestamps, ports, ICE/DTLS values become fixed
// placeholders of the same JSON type) and kept as pretty JSON in
// internal/protocol/testdata/wire/{server,client,rest}/. The TypeScript SDK
// type-checks its src/protocol.ts against the same files
// (web/client/test/wire-types.mjs), so Go and TypeScript cannot drift.
//
//	go test ./internal/server -run TestWireGolden -count=1          # compare
//	go test ./internal/server -run TestWireGolden -count=1 -update  # rewrite
//
// Without -update the test compares SHAPES, not values: the set of keys at
// every level and each value's JSON type (arrays by their first element).
// A renamed, added or removed field, a changed type, a golden file the
// scenario no longer produces, and a type in protocol.ServerTypes or
// protocol.ClientTypes with neither a golden file nor an entry in the
// "not yet" lists below all fail the test.
var updateWire = flag.Bool("update", false, "rewrite internal/protocol/testdata/wire from a real server (TestWireGolden)")

// wireDir is internal/protocol/testdata/wire, seen from this package.
const wireDir = "../protocol/testdata/wire"

// wireServerNotSentYet are the types of protocol.ServerTypes this server
// cannot send yet, with the issue that will add them. When one starts being
// sent, capture it in the scenario and remove it here (the test fails until
// both are done).
var wireServerNotSentYet = map[string]string{}

// wireClientNotAcceptedYet are the types of protocol.ClientTypes that no
// handler implements yet: the scenario sends each (with the data below) and
// requires the error code given, so this list cannot go stale either.
var wireClientNotAcceptedYet = map[string]struct {
	issue, code string
	data        map[string]any
}{}

// wireRec collects the examples of one scenario run.
type wireRec struct {
	t     *testing.T
	files map[string]any    // "server/room.state.json" → decoded JSON
	seen  map[string]bool   // every server frame type any client received
	alias map[string]string // volatile value → fixed placeholder
}

func newWireRec(t *testing.T) *wireRec {
	return &wireRec{t: t, files: map[string]any{}, seen: map[string]bool{}, alias: map[string]string{}}
}

// wireFile names the golden file of a message type: ':' becomes '.', and a
// variant (a second example of one type) follows an '@'.
func wireFile(kind, typ, variant string) string {
	name := strings.ReplaceAll(typ, ":", ".")
	if variant != "" {
		name += "@" + variant
	}
	return kind + "/" + name + ".json"
}

func (w *wireRec) keep(file string, v any) {
	w.t.Helper()
	if _, dup := w.files[file]; dup {
		w.t.Fatalf("wire: %s captured twice", file)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		w.t.Fatal(err)
	}
	w.files[file] = decodeNumbers(w.t, raw)
}

// envelope rebuilds a frame as {type, id?, data?}.
func envelope(f protocol.Envelope) map[string]any {
	m := map[string]any{"type": f.Type}
	if f.ID != "" {
		m["id"] = f.ID
	}
	if len(f.Data) > 0 {
		m["data"] = f.Data
	}
	return m
}

// server keeps a received frame as the example of its type (variant "" for
// the plain one).
func (w *wireRec) server(f protocol.Envelope, variant string) protocol.Envelope {
	w.t.Helper()
	w.keep(wireFile("server", f.Type, variant), envelope(f))
	return f
}

// rest keeps a REST answer body.
func (w *wireRec) rest(name string, body []byte) []byte {
	w.t.Helper()
	w.keep("rest/"+name+".json", json.RawMessage(body))
	return body
}

// send sends a client message and keeps it as the example of its type
// (variant "" for the plain one; "-" sends without keeping).
func (w *wireRec) send(c *servertest.Client, typ, id string, data any, variant string) {
	w.t.Helper()
	if variant != "-" {
		m := map[string]any{"type": typ}
		if id != "" {
			m["id"] = id
		}
		if data != nil {
			m["data"] = data
		}
		w.keep(wireFile("client", typ, variant), m)
	}
	c.Request(typ, id, data)
}

// await reads c's frames until one of type typ (and id, when given)
// arrives, noting every type seen and skipping the others. An error frame
// carrying the awaited id fails the test.
func (w *wireRec) await(c *servertest.Client, typ, id string) protocol.Envelope {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, ok := c.Next(time.Until(deadline))
		if !ok {
			w.t.Fatalf("%s: no %s (id %q) within 5 s (close code %d)", c.UserID, typ, id, c.CloseCode())
		}
		w.seen[f.Type] = true
		if f.Type == typ && (id == "" || f.ID == id) {
			return f
		}
		if id != "" && f.ID == id && f.Type == protocol.TypeError {
			w.t.Fatalf("%s: %s %q answered %s", c.UserID, typ, id, f.Data)
		}
	}
}

// rest performs a REST call, requires the status and returns the body.
func (w *wireRec) call(s *servertest.Server, method, path, bearer string, body any, want int, headers ...string) []byte {
	w.t.Helper()
	code, out := s.Do(method, path, bearer, body, headers...)
	if code != want {
		w.t.Fatalf("%s %s: %d %s, want %d", method, path, code, out, want)
	}
	return out
}

func decodeNumbers(t testing.TB, raw []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

func TestWireGolden(t *testing.T) {
	env := mediaEnv()
	// A static TURN server, so that ice_servers has an element to type.
	env["PARLEY_TURN_URL"] = "turn:127.0.0.1:3478?transport=udp"
	env["PARLEY_TURN_USERNAME"] = "turn-user"
	env["PARLEY_TURN_PASSWORD"] = "turn-pass"
	s := servertest.Start(t, env)
	w := newWireRec(t)
	key := servertest.APIKey

	// --- REST: accounts, tokens, rooms, storage ----------------------------
	var tp struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		User         struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	reg := w.rest("auth.register", w.call(s, "POST", "/api/auth/register", "",
		map[string]any{"username": "alice", "password": "correct horse battery", "display_name": "Alice"}, http.StatusCreated))
	if err := json.Unmarshal(reg, &tp); err != nil {
		t.Fatal(err)
	}
	aliceID := tp.User.ID
	w.alias[aliceID] = "<user:alice>"
	w.rest("auth.login", w.call(s, "POST", "/api/auth/login", "",
		map[string]any{"username": "alice", "password": "correct horse battery"}, http.StatusOK))
	ref := w.rest("auth.refresh", w.call(s, "POST", "/api/auth/refresh", "",
		map[string]any{"refresh_token": tp.RefreshToken}, http.StatusOK))
	if err := json.Unmarshal(ref, &tp); err != nil {
		t.Fatal(err)
	}
	alice := tp.AccessToken
	w.rest("me", w.call(s, "GET", "/api/me", alice, nil, http.StatusOK))
	w.rest("error", w.call(s, "POST", "/api/auth/login", "",
		map[string]any{"username": "alice", "password": "wrong password!"}, http.StatusUnauthorized))
	var minted struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(w.rest("tokens", w.call(s, "POST", "/api/tokens", key,
		map[string]any{"user_id": "bob", "name": "Bob", "ttl_seconds": 3600}, http.StatusOK)), &minted); err != nil {
		t.Fatal(err)
	}
	bob := minted.Token

	w.rest("rooms.create", w.call(s, "POST", "/api/rooms", alice, map[string]any{"id": "team", "name": "Team", "open": false}, http.StatusCreated))
	w.call(s, "POST", "/api/rooms/team/members", alice, map[string]any{"user_id": "bob"}, http.StatusNoContent)
	w.rest("rooms.list", w.call(s, "GET", "/api/rooms", alice, nil, http.StatusOK))
	w.rest("rooms.get", w.call(s, "GET", "/api/rooms/team", alice, nil, http.StatusOK))
	w.rest("storage.patch", w.call(s, "PATCH", "/api/rooms/team/storage", alice,
		`[{"op":"add","path":"/title","value":"Plan"},{"op":"add","path":"/items","value":[]}]`, http.StatusOK))
	w.rest("storage.get", w.call(s, "GET", "/api/rooms/team/storage", alice, nil, http.StatusOK))

	// --- WebSocket: connect, status, ping ----------------------------------
	a := s.Dial(alice)
	w.alias[a.ConnID] = "<conn:alice>"
	w.server(a.Hello, "")
	b := s.Dial(bob)
	w.alias[b.ConnID] = "<conn:bob>"
	w.server(w.await(a, protocol.TypePresenceUpdate, ""), "") // bob came online
	w.send(a, protocol.TypePing, "p1", nil, "")
	w.server(w.await(a, protocol.TypePong, "p1"), "")

	// --- rooms --------------------------------------------------------------
	w.send(a, protocol.TypeRoomJoin, "j1", map[string]any{"room_id": "team", "presence": map[string]any{"cursor": map[string]any{"x": 1, "y": 2}}}, "")
	w.await(a, protocol.TypeRoomState, "j1")
	w.send(b, protocol.TypeRoomJoin, "j2", map[string]any{"room_id": "team", "presence": map[string]any{"status": "here"}}, "-")
	w.server(w.await(b, protocol.TypeRoomState, "j2"), "") // two members, storage data
	w.server(w.await(a, protocol.TypeRoomJoined, ""), "")

	w.send(a, protocol.TypeRoomUpdatePresence, "up1", map[string]any{"room_id": "team", "presence": map[string]any{"cursor": map[string]any{"x": 3, "y": 4}, "typing": true}}, "")
	w.server(w.await(a, protocol.TypeRoomPresenceUpdated, "up1"), "")
	w.await(b, protocol.TypeRoomPresenceUpdated, "")

	w.send(a, protocol.TypeRoomUpdateStorage, "us1", map[string]any{"room_id": "team", "base_version": 1,
		"ops": []any{map[string]any{"op": "add", "path": "/items/-", "value": map[string]any{"text": "first"}}}}, "")
	w.server(w.await(a, protocol.TypeRoomStorageUpdated, "us1"), "")
	w.await(b, protocol.TypeRoomStorageUpdated, "")
	// A batch written over REST: its client_id is "user:<user_id>", not a
	// connection id.
	w.alias["user:"+aliceID] = "user:<user:alice>"
	w.call(s, "PATCH", "/api/rooms/team/storage", alice, `[{"op":"add","path":"/owner","value":"alice"}]`, http.StatusOK)
	w.server(w.await(b, protocol.TypeRoomStorageUpdated, ""), "rest")
	w.await(a, protocol.TypeRoomStorageUpdated, "")

	w.send(a, protocol.TypeRoomBroadcast, "bc1", map[string]any{"room_id": "team", "event": map[string]any{"kind": "emoji", "value": "wave"}}, "")
	w.server(w.await(a, protocol.TypeAck, "bc1"), "")
	w.server(w.await(b, protocol.TypeRoomEvent, ""), "")

	// Leave, miss an update, come back with since_version: the updates form.
	w.send(b, protocol.TypeRoomLeave, "l1", map[string]any{"room_id": "team"}, "")
	w.server(w.await(b, protocol.TypeRoomLeft, "l1"), "")
	w.await(a, protocol.TypeRoomLeft, "")
	w.send(a, protocol.TypeRoomUpdateStorage, "us2", map[string]any{"room_id": "team",
		"ops": []any{map[string]any{"op": "replace", "path": "/title", "value": "Plan B"}}}, "-")
	w.await(a, protocol.TypeRoomStorageUpdated, "us2")
	w.send(b, protocol.TypeRoomJoin, "j3", map[string]any{"room_id": "team", "since_version": 3, "presence": map[string]any{"status": "back"}}, "since_version")
	w.server(w.await(b, protocol.TypeRoomState, "j3"), "updates")
	w.await(a, protocol.TypeRoomJoined, "")

	// A large room (a second server whose rooms are large above one
	// member): room:state's first page and members_next, room:members
	// pages, joins coalesced into room:members_changed, presence into
	// room:presence_batch.
	s2 := servertest.Start(t, map[string]string{"PARLEY_LARGE_ROOM_MEMBERS": "1", "PARLEY_LARGE_ROOM_INTERVAL": "20ms"})
	a2, b2 := s2.Dial(s2.Token("alice2", servertest.AllRooms)), s2.Dial(s2.Token("bob2", servertest.AllRooms))
	w.alias[a2.ConnID], w.alias[b2.ConnID] = "<conn:alice2>", "<conn:bob2>"
	w.send(a2, protocol.TypeRoomJoin, "lj1", map[string]any{"room_id": "big"}, "-")
	w.await(a2, protocol.TypeRoomState, "lj1")
	w.send(b2, protocol.TypeRoomJoin, "lj2", map[string]any{"room_id": "big", "presence": map[string]any{"cursor": map[string]any{"x": 0, "y": 0}}}, "-")
	w.server(w.await(b2, protocol.TypeRoomState, "lj2"), "large")
	w.server(w.await(a2, protocol.TypeRoomMembersChanged, ""), "")
	w.send(b2, protocol.TypeRoomMembers, "lm1", map[string]any{"room_id": "big", "limit": 10}, "")
	w.server(w.await(b2, protocol.TypeRoomMembersPage, "lm1"), "")
	w.send(b2, protocol.TypeRoomUpdatePresence, "lp1", map[string]any{"room_id": "big", "presence": map[string]any{"cursor": map[string]any{"x": 5, "y": 6}}}, "-")
	w.await(b2, protocol.TypeRoomPresenceUpdated, "lp1")
	w.server(w.await(a2, protocol.TypeRoomPresenceBatch, ""), "")

	// A refusal: an error frame carrying the request id.
	w.send(a, protocol.TypeRoomJoin, "j4", map[string]any{"room_id": "elsewhere"}, "-")
	w.server(w.await(a, protocol.TypeError, "j4"), "")

	// --- chat: typing, status, messages ------------------------------------
	w.send(a, protocol.TypeTypingStart, "ts1", map[string]any{"room_id": "team"}, "")
	w.await(a, protocol.TypeAck, "ts1")
	w.server(w.await(b, protocol.TypeTypingStart, ""), "")
	w.send(a, protocol.TypeTypingStop, "ts2", map[string]any{"room_id": "team"}, "")
	w.await(a, protocol.TypeAck, "ts2")
	w.server(w.await(b, protocol.TypeTypingStop, ""), "")
	w.send(b, protocol.TypePresenceUpdate, "st1", map[string]any{"presence": "dnd"}, "")
	w.await(b, protocol.TypeAck, "st1")

	var msg struct {
		ID string `json:"id"`
	}
	w.call(s, "POST", "/api/rooms/team/messages", alice, map[string]any{"content": "first"}, http.StatusCreated, "X-Connection-Id", a.ConnID)
	w.await(b, protocol.TypeMessageCreate, "")
	created := w.rest("messages.create", w.call(s, "POST", "/api/rooms/team/messages", alice,
		map[string]any{"content": "hello", "nonce": "n-1"}, http.StatusCreated, "X-Connection-Id", a.ConnID))
	if err := json.Unmarshal(created, &msg); err != nil {
		t.Fatal(err)
	}
	w.alias[msg.ID] = "<message>"
	w.server(w.await(b, protocol.TypeMessageCreate, ""), "")
	w.rest("messages.update", w.call(s, "PATCH", "/api/rooms/team/messages/"+msg.ID, alice,
		map[string]any{"content": "hello, edited"}, http.StatusOK, "X-Connection-Id", a.ConnID))
	w.server(w.await(b, protocol.TypeMessageUpdate, ""), "")
	w.rest("messages.list", w.call(s, "GET", "/api/rooms/team/messages?limit=1", alice, nil, http.StatusOK))
	w.call(s, "DELETE", "/api/rooms/team/messages/"+msg.ID, alice, nil, http.StatusNoContent, "X-Connection-Id", a.ConnID)
	w.server(w.await(b, protocol.TypeMessageDelete, ""), "")
	w.rest("presence", w.call(s, "GET", "/api/presence?user_ids="+aliceID+",bob", alice, nil, http.StatusOK))

	// --- calls and media ----------------------------------------------------
	var start struct {
		RTPCapabilities json.RawMessage `json:"rtp_capabilities"`
	}
	if err := json.Unmarshal(w.rest("call.start", w.call(s, "POST", "/api/rooms/team/call/start", alice, nil, http.StatusOK)), &start); err != nil {
		t.Fatal(err)
	}
	w.server(w.await(a, protocol.TypeRoomCallStarted, ""), "")
	w.await(b, protocol.TypeRoomCallStarted, "")

	w.send(a, protocol.TypeMediaJoin, "mj1", map[string]any{"room_id": "team"}, "")
	w.server(w.await(a, protocol.TypeMediaRouterCapabilities, ""), "")
	var tc struct {
		SendTransport struct {
			ID string `json:"id"`
		} `json:"send_transport"`
		RecvTransport struct {
			ID string `json:"id"`
		} `json:"recv_transport"`
	}
	f := w.server(w.await(a, protocol.TypeMediaTransportCreated, "mj1"), "")
	if err := json.Unmarshal(f.Data, &tc); err != nil {
		t.Fatal(err)
	}
	w.alias[tc.SendTransport.ID] = "<transport:alice-send>"
	w.alias[tc.RecvTransport.ID] = "<transport:alice-recv>"
	w.server(w.await(a, protocol.TypeRoomCallUpdated, ""), "")
	w.await(b, protocol.TypeRoomCallUpdated, "")

	w.send(b, protocol.TypeMediaJoin, "mj2", map[string]any{"room_id": "team"}, "-")
	var caps struct {
		RTPCapabilities json.RawMessage `json:"rtp_capabilities"`
	}
	if err := json.Unmarshal(w.await(b, protocol.TypeMediaRouterCapabilities, "").Data, &caps); err != nil {
		t.Fatal(err)
	}
	var tcB struct {
		SendTransport struct {
			ID string `json:"id"`
		} `json:"send_transport"`
		RecvTransport struct {
			ID string `json:"id"`
		} `json:"recv_transport"`
	}
	bobTransports := w.await(b, protocol.TypeMediaTransportCreated, "mj2")
	if err := json.Unmarshal(bobTransports.Data, &tcB); err != nil {
		t.Fatal(err)
	}
	w.alias[tcB.SendTransport.ID] = "<transport:bob-send>"
	w.alias[tcB.RecvTransport.ID] = "<transport:bob-recv>"

	w.send(a, protocol.TypeMediaConnectTransport, "ct1", map[string]any{"room_id": "team", "transport_id": tc.SendTransport.ID,
		"dtls_parameters": map[string]any{"role": "client", "fingerprints": []map[string]string{{"algorithm": "sha-256", "value": strings.Repeat("AB:", 31) + "AB"}}}}, "")
	w.server(w.await(a, protocol.TypeMediaTransportConnected, "ct1"), "")

	w.send(a, protocol.TypeMediaProduce, "pr1", map[string]any{"room_id": "team", "transport_id": tc.SendTransport.ID, "kind": "audio", "source": "mic",
		"rtp_parameters": map[string]any{
			"mid":              "0",
			"codecs":           []map[string]any{{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2, "parameters": map[string]any{"useinbandfec": 1}, "rtcpFeedback": []any{map[string]any{"type": "transport-cc", "parameter": ""}}}},
			"headerExtensions": []map[string]any{{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": false, "parameters": map[string]any{}}},
			"encodings":        []map[string]any{{"ssrc": 1111, "dtx": false}},
			"rtcp":             map[string]any{"cname": "alice-cname", "reducedSize": true},
		}}, "")
	var produced struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.server(w.await(a, protocol.TypeMediaProduceResult, "pr1"), "").Data, &produced); err != nil {
		t.Fatal(err)
	}
	w.alias[produced.ID] = "<producer:alice-mic>"
	w.server(w.await(b, protocol.TypeMediaNewProducer, ""), "")

	w.send(b, protocol.TypeMediaConsume, "co1", map[string]any{"room_id": "team", "producer_id": produced.ID, "rtp_capabilities": caps.RTPCapabilities}, "")
	var consumer struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.server(w.await(b, protocol.TypeMediaConsumerCreated, "co1"), "").Data, &consumer); err != nil {
		t.Fatal(err)
	}
	w.alias[consumer.ID] = "<consumer:bob>"

	// Data channels: the signalling needs no SCTP association yet.
	w.send(a, protocol.TypeMediaProduceData, "pd1", map[string]any{"room_id": "team", "transport_id": tc.SendTransport.ID,
		"sctp_stream_parameters": map[string]any{"streamId": 0, "ordered": true}, "label": "chat", "protocol": "json"}, "")
	var dataProduced struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.server(w.await(a, protocol.TypeMediaProduceDataResult, "pd1"), "").Data, &dataProduced); err != nil {
		t.Fatal(err)
	}
	w.alias[dataProduced.ID] = "<data-producer:alice-chat>"
	w.server(w.await(b, protocol.TypeMediaNewDataProducer, ""), "")
	w.send(b, protocol.TypeMediaConsumeData, "cd1", map[string]any{"room_id": "team", "data_producer_id": dataProduced.ID}, "")
	var dataConsumer struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.server(w.await(b, protocol.TypeMediaDataConsumerCreated, "cd1"), "").Data, &dataConsumer); err != nil {
		t.Fatal(err)
	}
	w.alias[dataConsumer.ID] = "<data-consumer:bob>"
	w.rest("call.participants", w.call(s, "GET", "/api/rooms/team/call/participants", alice, nil, http.StatusOK))

	// Pause and resume: bob (who consumes alice's mic) is told.
	w.send(a, protocol.TypeMediaProducerPause, "pp1", map[string]any{"room_id": "team", "producer_id": produced.ID}, "")
	w.await(a, protocol.TypeAck, "pp1")
	w.server(w.await(b, protocol.TypeMediaProducerPaused, ""), "")
	w.send(a, protocol.TypeMediaProducerResume, "pr2", map[string]any{"room_id": "team", "producer_id": produced.ID}, "")
	w.await(a, protocol.TypeAck, "pr2")
	w.server(w.await(b, protocol.TypeMediaProducerResumed, ""), "")
	w.send(b, protocol.TypeMediaConsumerPause, "cp1", map[string]any{"room_id": "team", "consumer_id": consumer.ID}, "")
	w.await(b, protocol.TypeAck, "cp1")
	w.send(b, protocol.TypeMediaConsumerResume, "cr1", map[string]any{"room_id": "team", "consumer_id": consumer.ID}, "")
	w.await(b, protocol.TypeAck, "cr1")
	// A consumer created paused (then consumer_resume), of the same producer.
	w.send(b, protocol.TypeMediaConsume, "co2", map[string]any{"room_id": "team", "producer_id": produced.ID,
		"rtp_capabilities": caps.RTPCapabilities, "paused": true}, "paused")
	var paused struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.server(w.await(b, protocol.TypeMediaConsumerCreated, "co2"), "paused").Data, &paused); err != nil {
		t.Fatal(err)
	}
	w.alias[paused.ID] = "<consumer:bob-paused>"

	// Active speaker: bob publishes audio for real (mediatest: ICE, DTLS,
	// SRTP) with a loud audio level; both get media:active_speaker.
	var tcBSend media.TransportInfo
	{
		var full struct {
			SendTransport media.TransportInfo `json:"send_transport"`
		}
		if err := json.Unmarshal(bobTransports.Data, &full); err != nil {
			t.Fatal(err)
		}
		tcBSend = full.SendTransport
	}
	mc, err := mediatest.New(tcBSend)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	w.send(b, protocol.TypeMediaConnectTransport, "ct2", map[string]any{"room_id": "team", "transport_id": tcBSend.ID,
		"dtls_parameters": mc.DtlsParameters()}, "-")
	w.await(b, protocol.TypeMediaTransportConnected, "ct2")
	cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
	if err := mc.Connect(cctx); err != nil {
		ccancel()
		t.Fatal(err)
	}
	ccancel()
	w.send(b, protocol.TypeMediaProduce, "pr3", map[string]any{"room_id": "team", "transport_id": tcBSend.ID, "kind": "audio",
		"rtp_parameters": map[string]any{
			"codecs":           []map[string]any{{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2, "parameters": map[string]any{}, "rtcpFeedback": []any{}}},
			"headerExtensions": []map[string]any{{"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 1, "encrypt": false, "parameters": map[string]any{}}},
			"encodings":        []map[string]any{{"ssrc": 2222}},
			"rtcp":             map[string]any{"cname": "bob-cname", "reducedSize": true},
		}}, "-")
	var bobMic struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.await(b, protocol.TypeMediaProduceResult, "pr3").Data, &bobMic); err != nil {
		t.Fatal(err)
	}
	w.alias[bobMic.ID] = "<producer:bob-mic>"
	talking := make(chan struct{})
	talked := make(chan struct{})
	go func() {
		defer close(talked)
		for i := 0; ; i++ {
			select {
			case <-talking:
				return
			case <-time.After(10 * time.Millisecond):
			}
			p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i), Timestamp: uint32(i * 480), SSRC: 2222},
				Payload: []byte{0xf8, 0xff, 0xfe}}
			_ = p.SetExtension(1, []byte{0x80 | 10}) // voice, -10 dBov
			_ = mc.WriteRTP(p)
		}
	}()
	w.server(w.await(a, protocol.TypeMediaActiveSpeaker, ""), "")
	w.await(b, protocol.TypeMediaActiveSpeaker, "")
	close(talking)
	<-talked

	// Simulcast: bob publishes two rid-based layers on the same send
	// transport (key frames per layer every 50 ms), alice receives the top
	// one, then asks for layer 0 and is told when she gets it.
	stopRTP := wireSimulcast(t, w, a, b, mc, f.Data, caps.RTPCapabilities)
	defer stopRTP()

	// ICE restart and stats (one example of each stats item type).
	w.send(a, protocol.TypeMediaRestartICE, "ri1", map[string]any{"room_id": "team", "transport_id": tc.SendTransport.ID}, "")
	w.server(w.await(a, protocol.TypeMediaICERestarted, "ri1"), "")
	w.send(a, protocol.TypeMediaGetStats, "gs1", map[string]any{"room_id": "team", "transport_id": tc.SendTransport.ID}, "")
	w.server(w.await(a, protocol.TypeMediaStats, "gs1"), "")
	w.send(a, protocol.TypeMediaGetStats, "gs2", map[string]any{"room_id": "team", "producer_id": produced.ID}, "producer")
	w.server(w.await(a, protocol.TypeMediaStats, "gs2"), "producer")
	w.send(b, protocol.TypeMediaGetStats, "gs3", map[string]any{"room_id": "team", "consumer_id": consumer.ID}, "consumer")
	w.server(w.await(b, protocol.TypeMediaStats, "gs3"), "consumer")

	// The v1.1 requests not implemented yet answer as listed.
	for typ, want := range wireClientNotAcceptedYet {
		id := "ny-" + typ
		a.Request(typ, id, want.data)
		f := w.await(a, protocol.TypeError, id)
		var e protocol.Error
		_ = json.Unmarshal(f.Data, &e)
		if e.Code != want.code {
			t.Errorf("%s (listed as not accepted yet, %s) answered %s %q, want %s: implemented? give it a golden example and remove it from wireClientNotAcceptedYet",
				typ, want.issue, e.Code, e.Message, want.code)
		}
	}

	w.send(a, protocol.TypeMediaProducerClose, "pc1", map[string]any{"room_id": "team", "producer_id": produced.ID}, "")
	w.await(a, protocol.TypeAck, "pc1")
	w.server(w.await(b, protocol.TypeMediaProducerClosed, ""), "")
	w.send(b, protocol.TypeMediaLeave, "ml1", map[string]any{"room_id": "team"}, "")
	w.await(b, protocol.TypeAck, "ml1")
	w.server(w.await(a, protocol.TypeMediaPeerLeft, ""), "")

	w.rest("call.join", w.call(s, "POST", "/api/rooms/team/call/join", bob, map[string]any{"connection_id": b.ConnID}, http.StatusOK))
	w.rest("call.leave", w.call(s, "POST", "/api/rooms/team/call/leave", bob, map[string]any{"connection_id": b.ConnID}, http.StatusOK))
	w.rest("call.end", w.call(s, "POST", "/api/rooms/team/call/end", alice, nil, http.StatusOK))
	w.server(w.await(a, protocol.TypeMediaRoomClosed, ""), "")
	w.server(w.await(b, protocol.TypeRoomCallEnded, ""), "")

	w.check()
}

// wireSimulcast runs the simulcast part of the scenario: bob's send and
// alice's receive transports are connected by mediatest endpoints, bob
// produces two rid-based encodings, alice consumes them, gets
// media:consumer_layers_changed for layer 1, sends media:set_preferred_layers
// 0 and gets media:consumer_layers_changed for layer 0. It returns a
// function that stops the media.
func wireSimulcast(t *testing.T, w *wireRec, a, b *servertest.Client, pub *mediatest.Client, aliceTC, caps json.RawMessage) func() {
	t.Helper()
	var at struct {
		RecvTransport json.RawMessage `json:"recv_transport"`
	}
	if err := json.Unmarshal(aliceTC, &at); err != nil {
		t.Fatal(err)
	}
	connect := func(c *servertest.Client, raw json.RawMessage, id string) *mediatest.Client {
		mc, err := mediatest.NewJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		var tr struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &tr)
		w.send(c, protocol.TypeMediaConnectTransport, id, map[string]any{"room_id": "team", "transport_id": tr.ID, "dtls_parameters": mc.DTLSParameters()}, "-")
		w.await(c, protocol.TypeMediaTransportConnected, id)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := mc.Connect(ctx); err != nil {
			t.Fatalf("mediatest connect: %v", err)
		}
		return mc
	}
	sub := connect(a, at.RecvTransport, "ct-sim-sub")
	w.send(b, protocol.TypeMediaProduce, "pr-sim", map[string]any{"room_id": "team", "transport_id": pub.ID(), "kind": "video", "source": "webcam",
		"rtp_parameters": map[string]any{
			"mid": "1",
			"codecs": []map[string]any{
				{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": map[string]any{},
					"rtcpFeedback": []map[string]any{{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"}, {"type": "transport-cc", "parameter": ""}}},
				{"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": map[string]any{"apt": 96}, "rtcpFeedback": []any{}},
			},
			"headerExtensions": []map[string]any{
				{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": false, "parameters": map[string]any{}},
				{"uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "id": 10, "encrypt": false, "parameters": map[string]any{}},
				{"uri": "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id", "id": 11, "encrypt": false, "parameters": map[string]any{}},
			},
			"encodings": []map[string]any{
				{"rid": "r0", "active": true, "scaleResolutionDownBy": 2, "maxBitrate": 300000},
				{"rid": "r1", "active": true, "scaleResolutionDownBy": 1, "maxBitrate": 900000},
			},
			"rtcp": map[string]any{"cname": "bob-cname", "reducedSize": true},
		}}, "simulcast")
	var produced struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.await(b, protocol.TypeMediaProduceResult, "pr-sim").Data, &produced); err != nil {
		t.Fatal(err)
	}
	w.alias[produced.ID] = "<producer:bob-webcam>"
	w.send(a, protocol.TypeMediaConsume, "co-sim", map[string]any{"room_id": "team", "producer_id": produced.ID, "rtp_capabilities": caps}, "-")
	var consumer struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(w.await(a, protocol.TypeMediaConsumerCreated, "co-sim").Data, &consumer); err != nil {
		t.Fatal(err)
	}
	w.alias[consumer.ID] = "<consumer:alice-webcam>"

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		seq := [2]uint16{100, 5000}
		for frame := uint32(0); ; frame++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			for l, rid := range []string{"r0", "r1"} {
				seq[l]++
				p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq[l], Timestamp: frame * 4500,
					SSRC: 7000 + uint32(l), Marker: true}, Payload: []byte{0x10, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0, byte(l)}}
				_ = p.SetExtension(4, []byte("1"))
				_ = p.SetExtension(10, []byte(rid))
				_ = pub.WriteRTP(p)
			}
		}
	}()
	layers := func(want int) protocol.Envelope {
		t.Helper()
		for {
			f := w.await(a, protocol.TypeMediaConsumerLayersChanged, "")
			var m struct {
				SpatialLayer int `json:"spatial_layer"`
			}
			_ = json.Unmarshal(f.Data, &m)
			if m.SpatialLayer == want {
				return f
			}
		}
	}
	layers(1)
	w.send(a, protocol.TypeMediaSetPreferredLayers, "spl1", map[string]any{"room_id": "team", "consumer_id": consumer.ID, "spatial_layer": 0}, "")
	w.await(a, protocol.TypeAck, "spl1")
	w.server(layers(0), "")
	return func() {
		close(stop)
		<-done
		sub.Close() // pub is the caller's
	}
}

// check compares the captured examples with the golden files (or rewrites
// them with -update) and checks the type lists against them.
func (w *wireRec) check() {
	t := w.t
	t.Helper()
	files := make(map[string]any, len(w.files))
	for name, v := range w.files {
		files[name] = w.normalize(nil, v)
	}

	// Every type the server sent during the scenario is a known type with
	// an example.
	for typ := range w.seen {
		if protocol.ServerTypeLabel(typ) == protocol.LabelOther {
			t.Errorf("the server sent %q, which is not in protocol.ServerTypes", typ)
		}
		if _, ok := files[wireFile("server", typ, "")]; !ok {
			t.Errorf("the server sent %q but the scenario keeps no example of it: add w.server(...) for it", typ)
		}
	}
	// Every known type has an example, or is listed as not yet.
	for _, typ := range protocol.ServerTypes {
		_, have := files[wireFile("server", typ, "")]
		issue, notYet := wireServerNotSentYet[typ]
		switch {
		case have && notYet:
			t.Errorf("%s is captured but still listed in wireServerNotSentYet (%s): remove it from the list", typ, issue)
		case !have && !notYet:
			t.Errorf("server type %s (protocol.ServerTypes) has no golden example: capture it in TestWireGolden or list it in wireServerNotSentYet with its issue", typ)
		}
	}
	for typ := range wireServerNotSentYet {
		if protocol.ServerTypeLabel(typ) == protocol.LabelOther {
			t.Errorf("wireServerNotSentYet lists %s, which is not in protocol.ServerTypes", typ)
		}
	}
	for _, typ := range protocol.ClientTypes {
		_, have := files[wireFile("client", typ, "")]
		_, notYet := wireClientNotAcceptedYet[typ]
		if have == notYet {
			t.Errorf("client type %s: golden example %v, listed as not accepted yet %v (want exactly one)", typ, have, notYet)
		}
	}

	// types.json: the Go type lists, for web/client/test/wire-types.mjs
	// (which checks that ServerMessages and ClientMessages name exactly
	// these types). Compared by value, not shape.
	files["types.json"] = wireTypeLists()

	if *updateWire {
		w.write(files)
		return
	}
	var problems []string
	existing := goldenFiles(t)
	for _, name := range existing {
		if _, ok := files[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s: golden file not produced by the scenario any more (run with -update to remove it)", name))
		}
	}
	names := sortedKeys(files)
	for _, name := range names {
		raw, err := os.ReadFile(filepath.Join(wireDir, name))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: no golden file (run with -update to write it)", name))
			continue
		}
		want := decodeNumbers(t, raw)
		if name == "types.json" {
			if !reflect.DeepEqual(want, files[name]) {
				problems = append(problems, name+": the type lists of internal/protocol/types.go or this test changed (run with -update)")
			}
			continue
		}
		var diffs []string
		shapeDiff("$", want, files[name], &diffs)
		for _, d := range diffs {
			problems = append(problems, name+": "+d)
		}
	}
	if len(problems) > 0 {
		t.Errorf("the wire differs from %s (golden → now); if the change is intended, run\n"+
			"  go test ./internal/server -run TestWireGolden -count=1 -update\n"+
			"and update web/client/src/protocol.ts (node web/client/test/wire-types.mjs checks it):\n  %s",
			wireDir, strings.Join(problems, "\n  "))
	}
}

func (w *wireRec) write(files map[string]any) {
	t := w.t
	keep := map[string]bool{}
	for name, v := range files {
		keep[name] = true
		path := filepath.Join(wireDir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range goldenFiles(t) {
		if !keep[name] {
			if err := os.Remove(filepath.Join(wireDir, name)); err != nil {
				t.Fatal(err)
			}
			t.Logf("removed stale %s", name)
		}
	}
	t.Logf("wrote %d golden files under %s", len(files), wireDir)
}

// wireTypeLists is types.json: protocol.ServerTypes and ClientTypes and the
// "not yet" lists with their issues, as decoded JSON.
func wireTypeLists() any {
	strs := func(list []string) []any {
		sorted := append([]string(nil), list...)
		sort.Strings(sorted)
		out := make([]any, len(sorted))
		for i, s := range sorted {
			out[i] = s
		}
		return out
	}
	serverNotYet := map[string]any{}
	for typ, issue := range wireServerNotSentYet {
		serverNotYet[typ] = issue
	}
	clientNotYet := map[string]any{}
	for typ, v := range wireClientNotAcceptedYet {
		clientNotYet[typ] = v.issue
	}
	return map[string]any{
		"server":                  strs(protocol.ServerTypes),
		"client":                  strs(protocol.ClientTypes),
		"server_not_sent_yet":     serverNotYet,
		"client_not_accepted_yet": clientNotYet,
	}
}

// goldenFiles lists the existing golden files as "kind/name.json" (and
// types.json).
func goldenFiles(t *testing.T) []string {
	var out []string
	if _, err := os.Stat(filepath.Join(wireDir, "types.json")); err == nil {
		out = append(out, "types.json")
	}
	for _, kind := range []string{"server", "client", "rest"} {
		m, err := filepath.Glob(filepath.Join(wireDir, kind, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			out = append(out, kind+"/"+filepath.Base(p))
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	wireUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	wireTime = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`)
	wireJWT  = regexp.MustCompile(`^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)
)

// Placeholders for volatile values; each keeps the JSON type.
const (
	wireTimePlaceholder = "2026-01-01T00:00:00.000Z"
	wireUUIDPlaceholder = "00000000-0000-4000-8000-000000000000"
)

// normalize replaces volatile values (ids, tokens, timestamps, ports,
// ICE/DTLS secrets, SSRCs) with fixed placeholders of the same JSON type,
// so that an -update run writes the same bytes every time. path is the
// chain of object keys down to v ("[]" for an array element).
func (w *wireRec) normalize(path []string, v any) any {
	key := ""
	if len(path) > 0 {
		key = path[len(path)-1]
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = w.normalize(append(path[:len(path):len(path)], k), e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		strs := true
		for i, e := range x {
			out[i] = w.normalize(append(path[:len(path):len(path)], "[]"), e)
			_, isStr := out[i].(string)
			strs = strs && isStr
		}
		if key == "members" && strs {
			// REST room members are user ids in the store's order, which
			// depends on the generated ids: sort them for stable files.
			sort.Slice(out, func(i, j int) bool { return out[i].(string) < out[j].(string) })
		}
		return out
	case string:
		if a, ok := w.alias[x]; ok {
			return a
		}
		under := func(k string) bool {
			for _, p := range path {
				if p == k {
					return true
				}
			}
			return false
		}
		switch {
		case key == "access_token" || key == "token" || wireJWT.MatchString(x):
			return "<jwt>"
		case key == "refresh_token":
			return "<refresh_token>"
		case wireTime.MatchString(x):
			return wireTimePlaceholder
		case wireUUID.MatchString(x):
			return wireUUIDPlaceholder
		case key == "usernameFragment" || key == "password" || key == "foundation" || key == "cname" ||
			key == "iceUsernameFragment" || key == "iceRemoteUsernameFragment":
			return "<" + key + ">"
		case key == "value" && under("fingerprints"):
			return "<fingerprint>"
		case key == "ip" || key == "address":
			return "127.0.0.1"
		}
		return x
	case json.Number:
		switch key {
		case "port":
			if len(path) > 1 && path[len(path)-2] == "sctpParameters" {
				return x // always 5000
			}
			return json.Number("40000")
		case "ssrc":
			return json.Number("1234")
		case "priority":
			return json.Number("2113937151")
		case "timestamp":
			return json.Number("1700000000000")
		case "expires_in":
			return json.Number("900")
		}
		return x
	}
	return v
}

// jsonKind names a decoded value's JSON type.
func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number, float64:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// shapeDiff appends to out every difference of shape between want (the
// golden file) and got: keys missing or added at any level, a value whose
// JSON type changed, an array that became empty or stopped being empty.
// Arrays are compared by their first element.
func shapeDiff(path string, want, got any, out *[]string) {
	wk, gk := jsonKind(want), jsonKind(got)
	if wk != gk {
		*out = append(*out, fmt.Sprintf("%s: type %s → %s", path, wk, gk))
		return
	}
	switch wv := want.(type) {
	case map[string]any:
		gv := got.(map[string]any)
		for _, k := range sortedKeys(wv) {
			if _, ok := gv[k]; !ok {
				*out = append(*out, fmt.Sprintf("%s.%s: missing now (a %s in the golden file)", path, k, jsonKind(wv[k])))
				continue
			}
			shapeDiff(path+"."+k, wv[k], gv[k], out)
		}
		for _, k := range sortedKeys(gv) {
			if _, ok := wv[k]; !ok {
				*out = append(*out, fmt.Sprintf("%s.%s: new key (a %s), not in the golden file", path, k, jsonKind(gv[k])))
			}
		}
	case []any:
		gv := got.([]any)
		switch {
		case len(wv) == 0 && len(gv) == 0:
		case len(wv) == 0:
			*out = append(*out, fmt.Sprintf("%s: empty array in the golden file, not empty now", path))
		case len(gv) == 0:
			*out = append(*out, fmt.Sprintf("%s: array empty now, not in the golden file", path))
		default:
			shapeDiff(path+"[0]", wv[0], gv[0], out)
		}
	}
}
