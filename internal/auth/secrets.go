package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"time"
)

// randomBytes returns n bytes from crypto/rand, which never fails on the
// platforms Go supports (it aborts the program rather than return an error).
func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("auth: crypto/rand failed: " + err.Error())
	}
	return b
}

// GenerateSecret returns 32 random bytes as unpadded base64url (43
// characters), suitable for PARLEY_AUTH_SECRET or an API key.
func GenerateSecret() string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(32))
}

// NewRefreshToken returns an opaque refresh token (32 random bytes, unpadded
// base64url) for the client, and its hash (see HashRefreshToken), which is
// all the server stores.
func NewRefreshToken() (token, hash string) {
	token = GenerateSecret()
	return token, HashRefreshToken(token)
}

// HashRefreshToken returns the lowercase hex SHA-256 of token, the form in
// which refresh tokens are stored and looked up. The token has 256 bits of
// entropy, so an unsalted fast hash is enough.
func HashRefreshToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TURNCredentials returns time-limited TURN credentials in the coturn REST
// API scheme (coturn's use-auth-secret / static-auth-secret): username is
// "<unix expiry>:<userID>", expiring ttl after now, and credential is
// base64(HMAC-SHA1(sharedSecret, username)) in standard encoding.
func TURNCredentials(sharedSecret, userID string, ttl time.Duration, now time.Time) (username, credential string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + userID
	mac := hmac.New(sha1.New, []byte(sharedSecret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
