package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecode checks Decode's contract on any input: it never panics; an
// accepted envelope has a non-empty type, an id of at most 128 bytes, and
// data that is absent, null or a JSON object; a rejected frame is
// bad_request, and the id it salvages is at most 128 bytes of valid UTF-8.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"type":"room:join","id":"1","data":{"room_id":"r"}}`,
		`{"type":"ping"}`,
		`{"type":"ping","data":null}`,
		`{"type":"x","id":"7","data":[1]}`,
		`{"type":5,"id":"8"}`,
		`{"id":"9"}`,
		`{"type":"x"} {}`,
		`[]`, `nul`, ``, `{}`, `"x"`,
		"\xff\xfe",
		"{\"type\":\"room:join\",\"id\":\"r1\",\"data\":{\"room_id\":\"\xff\"}}",
		"{\"type\":\"x\",\"id\":\"r\xff3\"}",
		`{"type":"x","id":"` + strings.Repeat("a", 129) + `"}`,
		`{"type":"x","id":"` + strings.Repeat("9", 4096) + `"}`,
		`{"type":"x","data":` + strings.Repeat(`{"a":`, 500) + `1` + strings.Repeat(`}`, 500) + `}`,
		`{"type":"x","data":` + strings.Repeat(`[`, 2000) + `}`,
		`{"type":"\ud800","id":"\udfff"}`,
		`{"type":"room:update_storage","id":"a","data":{"room_id":"r","ops":[{"op":"add","path":"/k","value":"v"}]}}`,
		`{"TYPE":"ping","ID":"1"}`,
		`{"type":"ping","type":"pong"}`,
		`{"type":"room:broadcast","id":"n1","data":{"room_id":"r","event":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`,
		`{"type":"room:broadcast","id":"n2","data":{"event":` + strings.Repeat("[", 20000) + `}}`,
		`{"id":"j2","type":"ping" xx`,
		`{"id":"j4"`,
		`{"id":"j5","type":"x","data":{"a":"}]\"{"}} tail`,
		`{"type":"ping" xx, "id":"late"}`,
		`{"id":"a","ID":"b","type":"ping" xx`,
		`{"\u0069d":"esc","type":5}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		env, err := Decode(frame)
		if len(env.ID) > 128 {
			t.Fatalf("id of %d bytes", len(env.ID))
		}
		if err != nil {
			if err.Code != CodeBadRequest {
				t.Fatalf("rejected with code %s", err.Code)
			}
			if !utf8.ValidString(env.ID) {
				t.Fatalf("salvaged id %q is not valid UTF-8", env.ID)
			}
			// On a frame encoding/json can parse, the salvaged id is the
			// one encoding/json reads (when that is a usable id).
			var probe struct {
				ID json.RawMessage `json:"id"`
			}
			if utf8.Valid(frame) && json.Unmarshal(frame, &probe) == nil {
				if want := readID(probe.ID); env.ID != want {
					t.Fatalf("salvaged id %q, encoding/json reads %q", env.ID, want)
				}
			}
			return
		}
		if env.Type == "" {
			t.Fatal("accepted without a type")
		}
		if len(env.Data) > 0 && !bytes.Equal(env.Data, []byte("null")) && env.Data[0] != '{' {
			t.Fatalf("accepted data %q", env.Data)
		}
		if !utf8.Valid(frame) {
			t.Fatal("accepted invalid UTF-8")
		}
	})
}
