package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/protocol"
)

// onlyCodes fails the test unless err is nil or a protocol error with one
// of codes.
func onlyCodes(t *testing.T, err error, codes ...string) {
	t.Helper()
	if err == nil {
		return
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("not a protocol error: %v", err)
	}
	for _, c := range codes {
		if pe.Code == c {
			return
		}
	}
	t.Fatalf("error code %s (%v)", pe.Code, err)
}

// FuzzServerAPIBodies: the server API's request bodies (broadcast,
// disconnect) and the node questions behind GET /api/live/rooms and
// disconnect (anything that can publish on <cluster>.node.<id>.api)
// never panic, fail only with bad_request or too_large, and what they
// accept holds the documented limits: a broadcast event is compact valid
// JSON within the size limit; a close reason is valid UTF-8 of at most
// 123 bytes, a prefix of the one sent.
func FuzzServerAPIBodies(f *testing.F) {
	for _, s := range []string{
		`{"event":{"a":[1,2,{"b":null}]}}`, `{"event":null}`, `{"event": "x" }`, `{}`, `{"event":1,"x":2}`,
		`{"event":1} {}`, `{"reason":"bye"}`, `{"reason":null}`, `{"reason":""}`, ``, `  `,
		`{"reason":"` + strings.Repeat("é", 100) + `"}`, "{\"reason\":\"\xff\"}", "{\"event\":\"\xfe\"}",
		`{"after":"r","limit":10}`, `{"after":"","limit":0}`, `{"user_id":"u","reason":"r"}`, `{"user_id":""}`,
		`[`, `null`, `"x"`, `{"reason":"a\u0000b"}`, `{"reason":"line\nbreak"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := DecodeBroadcast(body, 64)
		onlyCodes(t, err, protocol.CodeBadRequest, protocol.CodeTooLarge)
		if err == nil && (!json.Valid(ev) || len(ev) > 64 || !utf8.Valid(ev)) {
			t.Fatalf("accepted event %q", ev)
		}
		reason, err := DecodeDisconnect(body)
		onlyCodes(t, err, protocol.CodeBadRequest)
		if err == nil {
			if !utf8.ValidString(reason) || len(reason) > MaxCloseReason || reason == "" || strings.IndexFunc(reason, unicode.IsControl) >= 0 {
				t.Fatalf("reason %q", reason)
			}
			var b DisconnectBody
			if json.Unmarshal(body, &b) == nil && b.Reason != nil && *b.Reason != "" && !strings.HasPrefix(*b.Reason, reason) {
				t.Fatalf("reason %q is not a prefix of %q", reason, *b.Reason)
			}
		}
		q, err := DecodeNodeLiveRooms(body)
		onlyCodes(t, err, protocol.CodeBadRequest)
		if err == nil && (q.Limit < 1 || q.Limit > MaxPageLimit) {
			t.Fatalf("live_rooms %+v", q)
		}
		d, err := DecodeNodeDisconnect(body)
		onlyCodes(t, err, protocol.CodeBadRequest)
		if err == nil && (!validUserID(d.UserID) || len(d.Reason) > MaxCloseReason) {
			t.Fatalf("disconnect %+v", d)
		}
		_, _ = DecodeNodeLiveRoomsAnswer(body)
	})
}

func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{{"abc", 5, "abc"}, {"abc", 2, "ab"}, {"éé", 3, "é"}, {"€", 2, ""}, {"a€", 3, "a"}} {
		if got := TruncateUTF8(tc.s, tc.n); got != tc.want {
			t.Errorf("TruncateUTF8(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
