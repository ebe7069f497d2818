package auth

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"regexp"
	"testing"
	"time"
)

var hexSHA256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestGenerateSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := GenerateSecret()
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil || len(b) != 32 || len(s) != 43 {
			t.Fatalf("GenerateSecret() = %q (%d bytes, %v), want 43 chars of base64url for 32 bytes", s, len(b), err)
		}
		if seen[s] {
			t.Fatalf("GenerateSecret repeated %q", s)
		}
		seen[s] = true
	}
}

func TestRefreshToken(t *testing.T) {
	tok, hash := NewRefreshToken()
	if b, err := base64.RawURLEncoding.Strict().DecodeString(tok); err != nil || len(b) != 32 {
		t.Errorf("refresh token %q: %d bytes, %v; want 32 bytes of base64url", tok, len(b), err)
	}
	if !hexSHA256RE.MatchString(hash) {
		t.Errorf("hash %q is not lowercase hex SHA-256", hash)
	}
	if hash != HashRefreshToken(tok) {
		t.Errorf("NewRefreshToken hash %q != HashRefreshToken(token) %q", hash, HashRefreshToken(tok))
	}
	tok2, hash2 := NewRefreshToken()
	if tok2 == tok || hash2 == hash {
		t.Error("two refresh tokens are equal")
	}
}

func TestHashRefreshTokenVector(t *testing.T) {
	tests := []struct{ token, want string }{
		// printf '%s' refresh-token-example | sha256sum
		{"refresh-token-example", "2507c061ba0e4deee6b5743d8d6487f7f5d3e6550a0711f6cadb49e2ff1ba0c4"},
		// SHA-256 of the empty string (FIPS 180-2).
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, tt := range tests {
		if got := HashRefreshToken(tt.token); got != tt.want {
			t.Errorf("HashRefreshToken(%q) = %s, want %s", tt.token, got, tt.want)
		}
	}
}

func TestTURNCredentials(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name, secret, user string
		ttl                time.Duration
		now                time.Time
		wantUser, wantCred string
	}{
		// printf '%s' '1700003600:u1' | openssl dgst -sha1 -hmac 'north-sea-turn-secret' -binary | base64
		{"openssl vector", "north-sea-turn-secret", "u1", time.Hour, now, "1700003600:u1", "9IQeYBUZ5XwAqVaT1Z3YQ29XkJQ="},
		// printf '%s' '1700003600:carol' | openssl dgst -sha1 -hmac 'north-sea-turn-secret' -binary | base64
		// (holds '+' and '/': standard base64, not URL-safe)
		{"openssl vector with + and /", "north-sea-turn-secret", "carol", time.Hour, now, "1700003600:carol", "FCi6aXdhk/mRpIAtI0U5tA+zBM4="},
		// Same instant in another zone: the expiry is Unix time, zone-free.
		{"zone independent", "north-sea-turn-secret", "u1", time.Hour, now.In(time.FixedZone("X", -7*3600)), "1700003600:u1", "9IQeYBUZ5XwAqVaT1Z3YQ29XkJQ="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, c := TURNCredentials(tt.secret, tt.user, tt.ttl, tt.now)
			if u != tt.wantUser || c != tt.wantCred {
				t.Errorf("TURNCredentials = %q, %q; want %q, %q", u, c, tt.wantUser, tt.wantCred)
			}
		})
	}

	// Cross-check with crypto/hmac directly on other inputs.
	u, c := TURNCredentials("s", "user:with:colons", 90*time.Second, now)
	if u != "1700000090:user:with:colons" {
		t.Errorf("username = %q", u)
	}
	mac := hmac.New(sha1.New, []byte("s"))
	mac.Write([]byte(u))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); c != want {
		t.Errorf("credential = %q, want %q", c, want)
	}
	if _, c2 := TURNCredentials("other", "user:with:colons", 90*time.Second, now); c2 == c {
		t.Error("credential does not depend on the secret")
	}
}
