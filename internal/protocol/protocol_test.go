package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		in      string
		ok      bool
		typ, id string
	}{
		{`{"type":"room:join","id":"1","data":{"room_id":"r"}}`, true, "room:join", "1"},
		{`{"type":"ping"}`, true, "ping", ""},
		{`{"type":"ping","data":null}`, true, "ping", ""},
		{`{"type":"x","id":"7","data":[1]}`, false, "x", "7"},
		{`{"type":"x","id":"7","data":"s"}`, false, "x", "7"},
		{`{"type":5,"id":"8"}`, false, "", "8"},
		{`{"id":"9"}`, false, "", "9"},
		{`{"type":"x","id":9}`, false, "", ""},
		{`{"type":"x"} {}`, false, "", ""},
		{`[]`, false, "", ""},
		{`nul`, false, "", ""},
		{"{\"type\":\"x\",\"id\":\"" + strings.Repeat("a", 129) + "\"}", false, "", ""},
		{"{\"id\":\"" + strings.Repeat("0", 129) + "\"}", false, "", ""}, // found by FuzzDecode: no type, long id echoed
		{"\xff\xfe", false, "", ""},
		// Invalid UTF-8 elsewhere in the frame: the readable id is kept
		// (issue 9 §6); an id that is itself invalid UTF-8 is not echoed.
		{"{\"type\":\"room:join\",\"id\":\"r1\",\"data\":{\"room_id\":\"\xff\"}}", false, "", "r1"},
		{"{\"id\":\"r2\",\"type\":\"x\xc0\"}", false, "", "r2"},
		{"{\"type\":\"x\",\"id\":\"r\xff3\"}", false, "", ""},
		{"{\"type\":\"x\",\"id\":\"" + strings.Repeat("a", 129) + "\",\"data\":\"\xff\"}", false, "", ""},
		// The id is read up to the point of failure, whatever follows
		// (hostile-client review of issue 9): a data value too deep for
		// encoding/json, trailing garbage, a truncated frame.
		{`{"type":"room:broadcast","id":"n1","data":{"room_id":"r","event":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`, false, "", "n1"},
		{`{"type":"room:broadcast","id":"n2","data":{"event":` + strings.Repeat("[", 20000) + `}}`, false, "", "n2"},
		{`{"id":"j2","type":"ping" xx`, false, "", "j2"},
		{`{"id":"j3","type":"ping"`, false, "", "j3"},
		{`{"id":"j4"`, false, "", "j4"},
		{`{"id":"j5","type":"x","data":{"a":"}]\"{"}} tail`, false, "", "j5"},
		{`{"id":"j6","type":"x","n":1e5,"b":true,"z":null,"data":{"a":[1,{"b":"]"}]}} x`, false, "", "j6"},
		// After the point of failure nothing counts.
		{`{"type":"ping" xx, "id":"late"}`, false, "", ""},
		{`{"type":"x","data":{"a":1]},"id":"late"}`, false, "", ""},
		// Duplicates: the last readable one, as encoding/json would.
		{`{"id":"a","ID":"b","type":"ping" xx`, false, "", "b"},
		{`{"id":"a","id":5,"type":"ping" xx`, false, "", ""},
		{`{"\u0069d":"esc","type":"ping" xx`, false, "", "esc"},
		{`{"idx":"no","type":"ping" xx`, false, "", ""},
		{"{\"id\":\"t\",\"type\":\"ping\"", false, "", "t"},
	}
	for _, tc := range cases {
		env, err := Decode([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.in, err)
			continue
		}
		if err != nil && err.Code != CodeBadRequest {
			t.Errorf("%s: code %s", tc.in, err.Code)
		}
		if env.ID != tc.id || (tc.ok && env.Type != tc.typ) {
			t.Errorf("%s: got type %q id %q", tc.in, env.Type, env.ID)
		}
	}
}

func TestDecodeDataStrict(t *testing.T) {
	var d struct {
		RoomID string `json:"room_id"`
		N      *int   `json:"n"`
	}
	if err := DecodeData(json.RawMessage(`{"room_id":"r","n":2}`), &d); err != nil || d.RoomID != "r" || *d.N != 2 {
		t.Fatalf("good data: %v %+v", err, d)
	}
	for _, bad := range []string{`{"room_id":1}`, `{"room_id":"r","extra":true}`, `{"n":"2"}`} {
		if err := DecodeData(json.RawMessage(bad), &d); err == nil || err.Code != CodeBadRequest {
			t.Errorf("%s accepted", bad)
		}
	}
	if err := DecodeData(nil, &d); err != nil {
		t.Errorf("missing data: %v", err)
	}
}

func TestValidRoomID(t *testing.T) {
	for _, ok := range []string{"a", "A-z_0.9:x", strings.Repeat("r", 128), "...", ".a", "a.."} {
		if !ValidRoomID(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", strings.Repeat("r", 129), "a b", "a/b", "é", "a*", ".", ".."} {
		if ValidRoomID(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestEncode(t *testing.T) {
	cases := []struct {
		typ, id string
		data    any
		want    string
	}{
		{"pong", "", nil, `{"type":"pong"}`},
		{"pong", `a"b`, nil, `{"type":"pong","id":"a\"b"}`},
		{"x", "1", map[string]int{"n": 1}, `{"type":"x","id":"1","data":{"n":1}}`},
		{"x", "", json.RawMessage(`{"raw":true}`), `{"type":"x","data":{"raw":true}}`},
		{"error", "e", Errorf(CodeForbidden, "no %s", "way"), `{"type":"error","id":"e","data":{"code":"forbidden","message":"no way"}}`},
	}
	for _, tc := range cases {
		got := string(Encode(tc.typ, tc.id, tc.data))
		if got != tc.want {
			t.Errorf("Encode = %s, want %s", got, tc.want)
		}
		var env Envelope
		if err := json.Unmarshal([]byte(got), &env); err != nil {
			t.Errorf("%s is not JSON: %v", got, err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	msg := []byte(`{"type":"room:broadcast","id":"42","data":{"room_id":"room-1","event":{"x":1,"y":2,"text":"hello world"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeRaw(b *testing.B) {
	data := json.RawMessage(`{"room_id":"room-1","client_id":"c1","user_id":"u1","event":{"x":1}}`)
	b.ReportAllocs()
	for b.Loop() {
		Encode("room:event", "", data)
	}
}

func TestTypeLabels(t *testing.T) {
	for _, typ := range ClientTypes {
		if ClientTypeLabel(typ) != typ {
			t.Errorf("client type %s not labelled as itself", typ)
		}
	}
	for _, typ := range ServerTypes {
		if ServerTypeLabel(typ) != typ {
			t.Errorf("server type %s not labelled as itself", typ)
		}
	}
	for _, typ := range []string{"room:x1", "", "room:state", "media:bogus", strings.Repeat("a", 1000)} {
		if got := ClientTypeLabel(typ); got != LabelUnknown {
			t.Errorf("ClientTypeLabel(%q) = %q", typ, got)
		}
	}
	if got := ServerTypeLabel("room:join"); got != LabelOther {
		t.Errorf("ServerTypeLabel(room:join) = %q", got)
	}
}

func TestFrameType(t *testing.T) {
	cases := map[string]string{
		string(Encode(TypeRoomEvent, "1", map[string]int{"a": 1})): TypeRoomEvent,
		string(EncodeError("x", Errorf(CodeForbidden, "no"))):      TypeError,
		`{"type":"pong"}`:  TypePong,
		`{"type":"a\"b"}`:  "",
		`{"type":"abc`:     "",
		`{"id":"1"}`:       "",
		``:                 "",
		`{"type": "pong"}`: "",
	}
	for in, want := range cases {
		if got := string(FrameType([]byte(in))); got != want {
			t.Errorf("FrameType(%s) = %q, want %q", in, got, want)
		}
	}
}

// Encode and Marshal never HTML-escape: `<`, `>`, `&` stay one byte each.
func TestEncodeNoHTMLEscape(t *testing.T) {
	v := map[string]any{"s": "<a href='x'>&</a>", "raw": json.RawMessage(`{"t":"<>&"}`)}
	f := Encode(TypeRoomEvent, "<id>&", v)
	want := `{"type":"room:event","id":"<id>&","data":{"raw":{"t":"<>&"},"s":"<a href='x'>&</a>"}}`
	if string(f) != want {
		t.Fatalf("Encode = %s\nwant     %s", f, want)
	}
	b, err := Marshal(strings.Repeat("<", 100))
	if err != nil || len(b) != 102 || bytes.Contains(b, []byte("\n")) {
		t.Fatalf("Marshal = %q %v", b, err)
	}
	// Ids that need JSON escaping are still valid JSON.
	for _, id := range []string{"a\"b", "a\\b", "tab\t", "é", "\u2028", "\x7f"} {
		var env Envelope
		if err := json.Unmarshal(Encode(TypePong, id, nil), &env); err != nil || env.ID != id {
			t.Errorf("id %q: %v %q", id, err, env.ID)
		}
	}
	if _, err := Marshal(func() {}); err == nil {
		t.Fatal("Marshal of a func did not fail")
	}
	if f := Encode(TypeAck, "", func() {}); string(f) != `{"type":"ack","data":{}}` {
		t.Fatalf("unencodable data: %s", f)
	}
}

func BenchmarkEncodeStruct(b *testing.B) {
	data := struct {
		RoomID, ClientID, UserID string
		N                        int
	}{"room-1", "c1", "u1", 3}
	b.ReportAllocs()
	for b.Loop() {
		Encode("room:event", "42", data)
	}
}

// TestEncodeRawOneAllocation: a frame around pre-encoded data (a
// room:state or a room:members_changed batch of tens of KiB, sent to every
// member) is built in exactly one allocation, sized up front, and is the
// same bytes as before.
func TestEncodeRawOneAllocation(t *testing.T) {
	big := json.RawMessage(`{"room_id":"r","members":[` + strings.Repeat(`{"client_id":"0123456789abcdef","user_id":"u"},`, 400) + `{}]}`)
	for _, tc := range []struct {
		typ, id string
		data    any
	}{
		{"room:state", "join-1", big},
		{"room:members_changed", "", big},
		{"room:event", "", []byte(`{"x":1}`)},
		{"room:state", "j", rawAppender(big)}, // written in place, no copy of its own
	} {
		var out []byte
		if n := testing.AllocsPerRun(20, func() { out = Encode(tc.typ, tc.id, tc.data) }); n != 1 {
			t.Errorf("%s: %v allocations, want 1", tc.typ, n)
		}
		var env struct {
			Type string          `json:"type"`
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(out, &env); err != nil || env.Type != tc.typ || env.ID != tc.id {
			t.Errorf("%s: %q decodes to %+v, %v", tc.typ, out, env, err)
		}
	}
}

// rawAppender is an Appender of fixed bytes.
type rawAppender []byte

func (a rawAppender) JSONLen() int               { return len(a) }
func (a rawAppender) AppendJSON(b []byte) []byte { return append(b, a...) }
