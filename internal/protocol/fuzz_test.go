package protocol

import (
	"bytes"
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
