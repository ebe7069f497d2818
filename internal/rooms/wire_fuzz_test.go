package rooms

import (
	"bytes"
	"slices"
	"testing"
)

// Fuzz targets for the two decoders of what other nodes send (wire.go):
//
//	go test -run '^$' -fuzz '^FuzzDecodeEvent$' -fuzztime 10s ./internal/rooms

func FuzzDecodeEvent(f *testing.F) {
	f.Add(encodeEvent(wireEvent{event: event{kind: evJoined, except: "c1", client: "c1", user: "u", node: "n1",
		frame: []byte(`{"type":"room:joined"}`)}, from: "n1", epoch: 7, seq: 3}))
	f.Add(encodeEvent(wireEvent{event: event{kind: evRefresh, user: "u"}, from: "n2"}))
	f.Add(encodeEvent(wireEvent{event: event{kind: evMembers, roster: []rosterEntry{{"c1", "u1", "n1"}, {"c2", "u2", ""}},
		frame: []byte(`{"type":"room:members_changed"}`)}, from: "n1", epoch: 2, seq: 9}))
	f.Add([]byte{evMembers, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Add([]byte{evFrame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(b)
		if err != nil {
			return
		}
		// What decodes survives a round trip unchanged.
		again, err := decodeEvent(encodeEvent(ev))
		if err != nil || again.from != ev.from || again.epoch != ev.epoch || again.seq != ev.seq ||
			again.event.kind != ev.kind || again.except != ev.except || again.client != ev.client ||
			again.user != ev.user || again.node != ev.node || !bytes.Equal(again.frame, ev.frame) ||
			!slices.Equal(again.roster, ev.roster) {
			t.Fatalf("round trip of %x: %+v became %+v (%v)", b, ev, again, err)
		}
	})
}

func FuzzDecodeNodeMsg(f *testing.F) {
	f.Add(encodeNodeMsg(nodeMsg{Kind: kindJoin, From: "n1", Room: "r", Conn: "c", User: "u", ReqID: "1"}))
	f.Add(encodeNodeMsg(nodeMsg{Kind: kindSynced, From: "n1", Room: "r", State: &joinState{MemberCount: 1,
		Members: []byte(`[]`), Storage: []byte(`{"version":0}`)}}))
	f.Add(encodeNodeMsg(nodeMsg{Kind: kindAPIEvent, From: "n1", Room: "r", Corr: 3, Event: []byte(`{"x":1}`)}))
	f.Add(encodeNodeMsg(nodeMsg{Kind: kindAPIConns, From: "n1", Room: "r", Corr: 4, After: "c", Limit: -1}))
	f.Add(encodeNodeMsg(nodeMsg{Kind: kindSync, From: "n1", Room: "r", Clients: []syncClient{{Conn: "c", User: "u", Joining: true}}}))
	f.Add([]byte(`{"k":"joined","f":"n","r":"r"}`))
	f.Add([]byte(`{"k":"nope","f":"n","r":"r"}`))
	f.Add([]byte(`{"k":"join","f":"n","r":"a/b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeNodeMsg(b)
		if err != nil {
			return
		}
		if validRoom(m.Room) != nil || m.From == "" {
			t.Fatalf("accepted %q", b)
		}
		if (m.Kind == kindJoined || m.Kind == kindSynced) && m.State == nil {
			t.Fatalf("accepted a state message without state: %q", b)
		}
	})
}
