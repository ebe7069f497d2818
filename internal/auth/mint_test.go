package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestSigner(secret []byte) *Signer {
	s := NewHS256Signer(secret)
	s.now = func() time.Time { return testNow }
	return s
}

// payload decodes a token's claims segment without verifying it.
func payload(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d segments", tok, len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMintRoundTrip(t *testing.T) {
	s := newTestSigner(testSecret)
	v := newTestVerifier(t, VerifierConfig{HMACSecret: testSecret})
	tests := []struct {
		name     string
		userID   string
		userName string
		ttl      time.Duration
		rooms    map[string]Perm
		wantKeys []string
	}{
		{"minimal", "u1", "", time.Hour, nil, []string{"exp", "iat", "sub"}},
		{"name and rooms", "user-42", "Ada Lovelace", 15 * time.Minute,
			map[string]Perm{"lobby": PermRead, "team-*": PermAll, "*": PermPresence},
			[]string{"exp", "iat", "name", "rooms", "sub"}},
		{"unicode", "用户", strings.Repeat("é", MaxNameLen), time.Second, map[string]Perm{}, []string{"exp", "iat", "name", "sub"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, exp, err := s.Mint(tt.userID, tt.userName, tt.ttl, tt.rooms)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if want := testNow.Add(tt.ttl); !exp.Equal(want) {
				t.Errorf("exp = %v, want %v", exp, want)
			}
			p := payload(t, tok)
			if keys := slices.Sorted(maps.Keys(p)); !slices.Equal(keys, tt.wantKeys) {
				t.Errorf("claims %v, want keys %v", p, tt.wantKeys)
			}
			c, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify(minted): %v", err)
			}
			want := &Claims{UserID: tt.userID, Name: tt.userName, ExpiresAt: exp, IssuedAt: testNow, Rooms: tt.rooms}
			if len(tt.rooms) == 0 {
				want.Rooms = nil
			}
			assertClaims(t, c, want)
		})
	}
}

// TestMintRoomsWireForm checks the claim is lists of names, as PROTOCOL.md
// section 4 says, not the Go bitmask.
func TestMintRoomsWireForm(t *testing.T) {
	tok, _, err := newTestSigner(testSecret).Mint("u1", "", time.Hour, map[string]Perm{"lobby": PermWrite | PermRead, "x*": 0})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(payload(t, tok)["rooms"])
	if want := `{"lobby":["read","write"],"x*":[]}`; string(got) != want {
		t.Errorf("rooms claim = %s, want %s", got, want)
	}
}

func TestMintErrors(t *testing.T) {
	tests := []struct {
		name   string
		secret []byte
		userID string
		uname  string
		ttl    time.Duration
		rooms  map[string]Perm
	}{
		{"no secret", nil, "u1", "", time.Hour, nil},
		{"empty user", testSecret, "", "", time.Hour, nil},
		{"blank user", testSecret, " ", "", time.Hour, nil},
		{"user too long", testSecret, strings.Repeat("u", MaxUserIDLen+1), "", time.Hour, nil},
		{"user with newline", testSecret, "u\n1", "", time.Hour, nil},
		{"name too long", testSecret, "u1", strings.Repeat("n", MaxNameLen+1), time.Hour, nil},
		{"zero ttl", testSecret, "u1", "", 0, nil},
		{"negative ttl", testSecret, "u1", "", -time.Hour, nil},
		{"sub-second ttl", testSecret, "u1", "", 500 * time.Millisecond, nil},
		{"bad pattern", testSecret, "u1", "", time.Hour, map[string]Perm{"a b": PermRead}},
		{"empty pattern", testSecret, "u1", "", time.Hour, map[string]Perm{"": PermRead}},
		{"unknown bits", testSecret, "u1", "", time.Hour, map[string]Perm{"lobby": 0x10}},
		{"too many grants", testSecret, "u1", "", time.Hour, manyRooms(400)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, err := newTestSigner(tt.secret).Mint(tt.userID, tt.uname, tt.ttl, tt.rooms)
			if err == nil {
				t.Errorf("Mint succeeded: %s", tok)
			}
		})
	}
}

func manyRooms(n int) map[string]Perm {
	m := make(map[string]Perm, n)
	for i := range n {
		m["room-number-"+strings.Repeat("x", 10)+string(rune('a'+i%26))+strings.Repeat("y", i/26)] = PermAll
	}
	return m
}

func TestMintedTokenRejectedElsewhere(t *testing.T) {
	tok, _, err := newTestSigner(testSecret).Mint("u1", "", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := newTestVerifier(t, VerifierConfig{HMACSecret: []byte("another-secret-0123456789abcdef!")})
	if _, err := other.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("verifier with another secret: err = %v, want ErrInvalidToken", err)
	}
	rsOnly := newTestVerifier(t, VerifierConfig{RSAPublicKey: keys().rsaPEM})
	if _, err := rsOnly.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("RS256-only verifier: err = %v, want ErrInvalidToken", err)
	}
	later := newTestVerifier(t, VerifierConfig{HMACSecret: testSecret})
	later.now = func() time.Time { return testNow.Add(time.Hour) }
	if _, err := later.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("verifying after ttl: err = %v, want ErrTokenExpired", err)
	}
}

func TestSignerCopiesSecret(t *testing.T) {
	secret := []byte("mutable-secret-0123456789abcdef!")
	s := newTestSigner(secret)
	secret[0] = 'X'
	tok, _, err := s.Mint("u1", "", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := newTestVerifier(t, VerifierConfig{HMACSecret: []byte("mutable-secret-0123456789abcdef!")})
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("Signer used the caller's changed slice: %v", err)
	}
}
