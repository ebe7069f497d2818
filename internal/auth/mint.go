package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Signer mints HS256 tokens that a Verifier configured with the same secret
// accepts. It is safe for concurrent use.
type Signer struct {
	secret []byte
	now    func() time.Time // clock; time.Now unless a test replaces it
}

// NewHS256Signer returns a Signer for secret (PARLEY_AUTH_SECRET). The secret
// is copied. An empty secret makes every Mint fail.
func NewHS256Signer(secret []byte) *Signer {
	return &Signer{secret: bytes.Clone(secret), now: time.Now}
}

// Mint returns a token for userID, valid for ttl from now, and its expiry.
// The token carries sub, name (when not empty), iat, exp and, when rooms is
// not empty, rooms as lists of permission names. userID, name and the room
// patterns must pass the same checks Verify applies, so that every minted
// token verifies.
func (s *Signer) Mint(userID, name string, ttl time.Duration, rooms map[string]Perm) (string, time.Time, error) {
	if len(s.secret) == 0 {
		return "", time.Time{}, errors.New("auth: no signing secret configured")
	}
	if err := validateUserID(userID); err != nil {
		return "", time.Time{}, fmt.Errorf("auth: %w", err)
	}
	if err := validateName(name); err != nil {
		return "", time.Time{}, fmt.Errorf("auth: %w", err)
	}
	if ttl < time.Second {
		return "", time.Time{}, fmt.Errorf("auth: token lifetime %v is shorter than 1s", ttl)
	}
	now := s.now()
	wc := wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   userID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Name: name,
	}
	if len(rooms) > 0 {
		m := make(map[string][]string, len(rooms))
		for pattern, p := range rooms {
			if err := validatePattern(pattern); err != nil {
				return "", time.Time{}, fmt.Errorf("auth: %w", err)
			}
			if p&^PermAll != 0 {
				return "", time.Time{}, fmt.Errorf("auth: room pattern %q: unknown permission bits %#x", pattern, uint8(p&^PermAll))
			}
			m[pattern] = p.Strings()
		}
		raw, err := json.Marshal(m)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("auth: encoding rooms: %w", err)
		}
		wc.Rooms = raw
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, wc).SignedString(s.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: signing token: %w", err)
	}
	if len(token) > MaxTokenBytes {
		return "", time.Time{}, fmt.Errorf("auth: token would be %d bytes, more than %d (too many room grants?)", len(token), MaxTokenBytes)
	}
	return token, wc.ExpiresAt.Time, nil
}
