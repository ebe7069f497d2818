package rooms

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"

	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/protocol"
)

// Fuzz targets for every room:* decoder reachable from the network and for
// the presence merge (issue 9 §3). Each checks that the function neither
// panics nor accepts what it must refuse; CI runs each for a few seconds:
//
//	go test -run '^$' -fuzz '^FuzzDecodeJoin$' -fuzztime 10s ./internal/rooms

const fuzzPresenceMax = 4096

var roomSeeds = []string{
	``, `null`, `{}`, `[]`, `"x"`, `{"room_id":"r"}`, `{"room_id":""}`, `{"room_id":"a/b"}`,
	`{"room_id":"r","extra":1}`, `{"room_id":"r","presence":{"a":1,"b":null}}`,
	`{"room_id":"r","presence":null}`, `{"room_id":"r","presence":[1]}`, `{"room_id":"r","since_version":-1}`,
	`{"room_id":"r","since_version":9223372036854775807}`, `{"room_id":"r","since_version":1e3}`,
	`{"room_id":"r","ops":[{"op":"add","path":"/a","value":"\ud800"}]}`,
	`{"room_id":"r","ops":[{"op":"add","path":"/a","value":{"b":[1,2]}}],"base_version":3}`,
	`{"room_id":"r","ops":[]}`, `{"room_id":"r","ops":{}}`, `{"room_id":"r","event":{"x":"\udc00"}}`,
	`{"room_id":"r","event":null}`, `{"room_id":"r","presence":{"\ud800":"\ud800"}}`,
	// Duplicate member names (refused in ops and presence, relayed in events).
	`{"room_id":"r","ops":[{"op":"add","path":"/d","value":{"a":1,"a":2}}]}`,
	`{"room_id":"r","ops":[{"op":"add","path":"/e","value":"x","value":"y"}]}`,
	`{"room_id":"r","ops":[{"op":"add","op":"remove","path":"/a","value":1}]}`,
	`{"room_id":"r","ops":[{"op":"add","path":"/a","value":[{"k":1},{"k":1,"\u006b":2}]}]}`,
	`{"room_id":"r","ops":[{"op":"add","path":"/a","value":{"k":{"k":1}}}]}`,
	`{"room_id":"r","presence":{"a":1,"a":null}}`, `{"room_id":"r","presence":{"a":{"b":1,"b":2}}}`,
	`{"room_id":"r","presence":{"a":{"a":{"a":1}}}}`, `{"room_id":"r","event":{"k":1,"k":2}}`,
}

func addSeeds(f *testing.F) {
	for _, s := range roomSeeds {
		f.Add([]byte(s))
	}
}

// isError requires err to be a bad_request or too_large error.
func isError(t *testing.T, err *protocol.Error) {
	t.Helper()
	if err.Code != protocol.CodeBadRequest && err.Code != protocol.CodeTooLarge {
		t.Fatalf("unexpected error code %q: %v", err.Code, err)
	}
}

func FuzzDecodeJoin(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeJoin(data, fuzzPresenceMax)
		if err != nil {
			isError(t, err)
			return
		}
		if !protocol.ValidRoomID(req.RoomID) {
			t.Fatalf("accepted room id %q", req.RoomID)
		}
		if req.SinceVersion != nil && *req.SinceVersion < 0 {
			t.Fatalf("accepted since_version %d", *req.SinceVersion)
		}
		for k, v := range req.Presence {
			if bytes.Equal(v, []byte("null")) || !json.Valid(v) {
				t.Fatalf("presence key %q kept value %q", k, v)
			}
		}
	})
}

func FuzzDecodeLeave(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeLeave(data)
		if err != nil {
			isError(t, err)
			return
		}
		if !protocol.ValidRoomID(d.RoomID) {
			t.Fatalf("accepted room id %q", d.RoomID)
		}
	})
}

func FuzzDecodePresence(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		room, patch, err := decodePresence(data, fuzzPresenceMax)
		if err != nil {
			isError(t, err)
			return
		}
		if !protocol.ValidRoomID(room) || patch == nil {
			t.Fatalf("accepted room %q, patch %v", room, patch)
		}
		for k, v := range patch {
			if jsonpatch.CheckUniqueNames(v) != nil {
				t.Fatalf("accepted presence key %q with a duplicate member name: %q", k, v)
			}
		}
	})
}

func FuzzDecodeStorage(f *testing.F) {
	addSeeds(f)
	lim := jsonpatch.Limits{MaxOps: 100, MaxDepth: 32, MaxBytes: 1 << 20, RejectInvalidText: true, RejectDuplicateNames: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, ops, err := decodeStorage(data, lim)
		if err != nil {
			isError(t, err)
			return
		}
		if !protocol.ValidRoomID(d.RoomID) || len(ops) == 0 || len(ops) > lim.MaxOps {
			t.Fatalf("accepted room %q with %d ops", d.RoomID, len(ops))
		}
		if jsonpatch.CheckText(d.Ops) != nil {
			t.Fatalf("accepted ops that are not valid Unicode: %q", d.Ops)
		}
		if jsonpatch.CheckUniqueNames(d.Ops) != nil {
			t.Fatalf("accepted ops with a duplicate member name: %q", d.Ops)
		}
		// What is broadcast (compact ops) parses to the same batch.
		if _, err := jsonpatch.ParseOps(compactJSON(d.Ops), lim); err != nil {
			t.Fatalf("compacted ops no longer parse: %v", err)
		}
		doc, _ := jsonpatch.NewDoc([]byte(`{"a":{"b":[1,2]}}`), lim)
		_, _ = jsonpatch.Apply(doc, ops, lim)
	})
}

func FuzzDecodeBroadcast(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeBroadcast(data)
		if err != nil {
			isError(t, err)
			return
		}
		if !protocol.ValidRoomID(d.RoomID) || !json.Valid(d.Event) {
			t.Fatalf("accepted room %q, event %q", d.RoomID, d.Event)
		}
	})
}

// FuzzPresenceMerge checks the shallow merge with null removal: the result
// holds old's keys that the patch does not name, the patch's non-null
// values (compacted), no key the patch set to null, and leaves its inputs
// alone.
func FuzzPresenceMerge(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":"x"}`), []byte(`{"b":null,"c":{"d":[1, 2]}}`))
	f.Add([]byte(`{}`), []byte(`{"a":null}`))
	f.Add([]byte(`{"a":1}`), []byte(`{"a":  [ true ,null ] }`))
	f.Add([]byte(`{"\ud800":1}`), []byte(`{"\ud800":null}`))
	f.Add([]byte(`{"a":1,"a":2}`), []byte(`{"a":null,"a":3}`))
	f.Add([]byte(`{"a":{"b":1}}`), []byte(`{"a":{"b":2,"b":3}}`))
	f.Fuzz(func(t *testing.T, oldRaw, patchRaw []byte) {
		old, err := parsePresenceObject(oldRaw, fuzzPresenceMax)
		if err != nil {
			isError(t, err)
			return
		}
		old = mergePresence(nil, old) // as stored after a join
		patch, err := parsePresenceObject(patchRaw, fuzzPresenceMax)
		if err != nil {
			isError(t, err)
			return
		}
		oldCopy, patchCopy := maps.Clone(old), maps.Clone(patch)
		merged := mergePresence(old, patch)
		eq := func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }
		if !maps.EqualFunc(old, oldCopy, eq) || !maps.EqualFunc(patch, patchCopy, eq) {
			t.Fatal("merge modified its inputs")
		}
		for k, v := range old {
			if _, named := patch[k]; !named && !bytes.Equal(merged[k], v) {
				t.Fatalf("key %q lost", k)
			}
		}
		for k, v := range patch {
			got, ok := merged[k]
			if bytes.Equal(v, []byte("null")) {
				if ok {
					t.Fatalf("key %q set to null was kept", k)
				}
				continue
			}
			if !ok || !bytes.Equal(got, compactJSON(v)) {
				t.Fatalf("key %q = %q, want %q compacted", k, got, v)
			}
		}
		for k := range merged {
			if _, inOld := old[k]; !inOld {
				if _, inPatch := patch[k]; !inPatch {
					t.Fatalf("key %q from nowhere", k)
				}
			}
		}
		enc, perr := encodePresence(merged, fuzzPresenceMax)
		if perr != nil {
			isError(t, perr)
			return
		}
		var back map[string]json.RawMessage
		if len(enc) > fuzzPresenceMax || json.Unmarshal(enc, &back) != nil || len(back) != len(merged) {
			t.Fatalf("encoded presence %q", enc)
		}
	})
}
