package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var fuzzSecret = []byte("fuzz-secret-0123456789abcdef")

// fuzzToken builds header.claims.signature; sign chooses the signature: 0
// a valid HS256 HMAC with the verifier's secret (so the fuzzer reaches
// claim parsing), 1 an HMAC with another key, 2 none at all, else the raw
// bytes of extra.
func fuzzToken(header, claims string, sign byte, extra string) string {
	b64 := base64.RawURLEncoding
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(claims))
	switch sign % 4 {
	case 0, 1:
		key := fuzzSecret
		if sign%4 == 1 {
			key = []byte("another-secret-0123456789")
		}
		m := hmac.New(sha256.New, key)
		m.Write([]byte(input))
		return input + "." + b64.EncodeToString(m.Sum(nil))
	case 2:
		return input + "."
	}
	return input + "." + extra
}

// FuzzVerify: Verify never panics, and accepts only HS256 tokens signed
// with the secret whose claims are valid (sub set, not expired, grants
// within PermAll).
func FuzzVerify(f *testing.F) {
	exp := time.Now().Add(time.Hour).Unix()
	hs := `{"alg":"HS256","typ":"JWT"}`
	claims := func(rooms string) string {
		return `{"sub":"u1","name":"N","exp":` + jsonNum(exp) + `,"rooms":` + rooms + `}`
	}
	f.Add(hs, claims(`{"*":["read","presence","write"]}`), byte(0), "")
	f.Add(hs, claims(`{"team-*":["read"],"a":["write"]}`), byte(0), "")
	f.Add(hs, claims(`null`), byte(0), "")
	f.Add(`{"alg":"none"}`, claims(`{"*":["read"]}`), byte(2), "")
	f.Add(`{"alg":"none","typ":"JWT"}`, claims(`{}`), byte(3), "")
	f.Add(`{"alg":"RS256"}`, claims(`{}`), byte(0), "")        // key confusion: HMAC under another alg
	f.Add(`{"alg":"EdDSA"}`, claims(`{}`), byte(0), "")        // idem
	f.Add(`{"alg":"HS512"}`, claims(`{}`), byte(0), "")        // another HMAC size
	f.Add(hs, claims(`{"*":["read"]}`), byte(1), "")           // wrong key
	f.Add(hs, `{"sub":"u1","exp":1}`, byte(0), "")             // expired
	f.Add(hs, `{"sub":"","exp":9999999999}`, byte(0), "")      // no subject
	f.Add(hs, `{"sub":"u1"}`, byte(0), "")                     // no exp
	f.Add(hs, claims(`{"":["read"],"**":["x"]}`), byte(0), "") // weird patterns
	f.Add(hs, claims(`{"a":"read"}`), byte(0), "")
	f.Add(hs, claims(`{"a":[1,2]}`), byte(0), "")
	f.Add(hs, claims(`[["read"]]`), byte(0), "")
	f.Add(hs, `{"sub":"`+strings.Repeat("u", 5000)+`","exp":9999999999,"name":"`+strings.Repeat("é", 3000)+`"}`, byte(0), "")
	f.Add(hs, `{"sub":"u1","exp":1e400}`, byte(0), "")
	f.Add(hs, `{"sub":"u1","exp":"9999999999"}`, byte(0), "")
	f.Add(hs, `{"sub":"u1","exp":9999999999,"nbf":9999999999}`, byte(0), "")
	f.Add("", "", byte(3), "garbage")
	f.Add("{", "}", byte(3), "..")
	v, err := NewVerifier(VerifierConfig{HMACSecret: fuzzSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header, claims string, sign byte, extra string) {
		tok := fuzzToken(header, claims, sign, extra)
		c, err := v.Verify(tok)
		if err != nil {
			if c != nil {
				t.Fatal("claims returned with an error")
			}
			return
		}
		if sign%4 != 0 {
			t.Fatalf("accepted without a valid signature: %q", tok)
		}
		var h struct {
			Alg string `json:"alg"`
		}
		if json.Unmarshal([]byte(header), &h) != nil || h.Alg != "HS256" {
			t.Fatalf("accepted header %q", header)
		}
		if c.UserID == "" || !c.ExpiresAt.After(time.Now().Add(-time.Minute)) {
			t.Fatalf("accepted claims %+v", c)
		}
		for pattern, p := range c.Rooms {
			if p&^PermAll != 0 || validatePattern(pattern) != nil {
				t.Fatalf("grant %q=%v", pattern, p)
			}
			if got := c.RoomPerms(strings.TrimSuffix(pattern, "*")); got&p != p {
				t.Fatalf("pattern %q grants %v on its own room, want ⊇ %v", pattern, got, p)
			}
		}
	})
}

func jsonNum(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// FuzzGrants: the rooms claim decoder, the --room grant parser and the
// pattern matcher never panic; decoded grants are valid patterns with
// permissions within PermAll; RoomPerms is the union of the matching
// patterns ("*" matches everything, a pattern matches its own id).
func FuzzGrants(f *testing.F) {
	f.Add(`{"*":["read"]}`, "room-1", "team-*=read,write")
	f.Add(`{"team-*":["read","presence"],"team-a":["write"]}`, "team-a", "team-a=write")
	f.Add(`{"":["read"]}`, "", "=read")
	f.Add(`{"a*b":["read"]}`, "a*b", "a*b=read")
	f.Add(`{"*":[]}`, "x", "*=")
	f.Add(`{"r":["read","read","nope"]}`, "r", "r=nope")
	f.Add(`null`, "r", "r")
	f.Add(`{"é":["read"]}`, "é", "é=read")
	f.Add(`{"`+strings.Repeat("a", 300)+`":["write"]}`, strings.Repeat("a", 300), strings.Repeat("a", 300)+"=write")
	f.Fuzz(func(t *testing.T, rooms, roomID, grant string) {
		if pattern, p, err := ParseRoomGrant(grant); err == nil {
			if validatePattern(pattern) != nil || p&^PermAll != 0 {
				t.Fatalf("ParseRoomGrant(%q) = %q, %v", grant, pattern, p)
			}
		}
		m, err := decodeRooms(json.RawMessage(rooms))
		if err != nil {
			return
		}
		c := &Claims{Rooms: m}
		got := c.RoomPerms(roomID)
		if got&^PermAll != 0 {
			t.Fatalf("RoomPerms %v outside PermAll", got)
		}
		var want Perm
		for pattern, p := range m {
			if validatePattern(pattern) != nil || p&^PermAll != 0 {
				t.Fatalf("decoded grant %q=%v", pattern, p)
			}
			if pattern == "*" || pattern == roomID || (strings.HasSuffix(pattern, "*") && strings.HasPrefix(roomID, pattern[:len(pattern)-1])) {
				want |= p
			}
		}
		if got != want {
			t.Fatalf("RoomPerms(%q) = %v, want %v for %v", roomID, got, want, m)
		}
	})
}
