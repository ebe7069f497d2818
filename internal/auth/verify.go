package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalidToken is wrapped by every error Verify returns: the token must not
// be trusted. The error text says why and is safe to show to the client.
var ErrInvalidToken = errors.New("invalid token")

// ErrTokenExpired is wrapped by Verify's error when the token's exp has
// passed. It wraps ErrInvalidToken, so errors.Is(err, ErrInvalidToken) holds
// for it too.
var ErrTokenExpired = fmt.Errorf("%w: token has expired", ErrInvalidToken)

// MaxTokenBytes is the longest token Verify accepts.
const MaxTokenBytes = 8 << 10

// Limits on identity claims, in characters.
const (
	MaxUserIDLen = 128
	MaxNameLen   = 128
)

// Algorithm names as they appear in the JWT "alg" header.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algEdDSA = "EdDSA"
)

// minRSABits is the smallest RSA public key NewVerifier accepts.
const minRSABits = 2048

// Claims is what a verified token says about its bearer.
type Claims struct {
	UserID    string          // "sub", required, 1..128 characters
	Name      string          // "name", optional, at most 128 characters
	ExpiresAt time.Time       // "exp", required
	IssuedAt  time.Time       // "iat", zero when absent
	Rooms     map[string]Perm // "rooms": pattern → permissions; nil when absent
}

// RoomPerms returns the union of the permissions of every pattern in c.Rooms
// that matches roomID. A pattern matches exactly or, when it ends with "*",
// by prefix; "*" alone matches every room.
func (c *Claims) RoomPerms(roomID string) Perm {
	var p Perm
	for pattern, q := range c.Rooms {
		if patternMatches(pattern, roomID) {
			p |= q
		}
	}
	return p & PermAll
}

// wireClaims is the JSON form of a token's claims, shared by Verify and Mint.
type wireClaims struct {
	jwt.RegisteredClaims
	Name  string          `json:"name,omitempty"`
	Rooms json.RawMessage `json:"rooms,omitempty"`
}

// VerifierConfig selects the keys a Verifier trusts. Each configured key
// enables exactly one algorithm; tokens signed with any other are refused.
type VerifierConfig struct {
	HMACSecret   []byte        // HS256 when set
	RSAPublicKey []byte        // PEM (PKIX, PKCS#1 or certificate); RS256 when set
	EdPublicKey  []byte        // PEM (PKIX); EdDSA (Ed25519) when set
	Leeway       time.Duration // clock skew allowed on exp, nbf and iat
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	hmacKey []byte
	rsaKey  *rsa.PublicKey
	edKey   ed25519.PublicKey
	methods []string
	parser  *jwt.Parser
	leeway  time.Duration

	now func() time.Time // clock; time.Now unless a test replaces it
}

// NewVerifier builds a Verifier from cfg. It fails when no key is configured,
// when a PEM key does not parse or is of the wrong type, when the RSA key is
// shorter than 2048 bits, or when the HMAC secret equals one of the public
// keys (which would make forging tokens trivial).
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	v := &Verifier{now: time.Now}
	if len(cfg.HMACSecret) > 0 {
		v.hmacKey = bytes.Clone(cfg.HMACSecret)
		v.methods = append(v.methods, algHS256)
	}
	if len(cfg.RSAPublicKey) > 0 {
		if bytes.Equal(cfg.HMACSecret, cfg.RSAPublicKey) {
			return nil, errors.New("auth: the HMAC secret must not be the RSA public key")
		}
		k, err := jwt.ParseRSAPublicKeyFromPEM(cfg.RSAPublicKey)
		if err != nil {
			return nil, fmt.Errorf("auth: RSA public key: %w", err)
		}
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("auth: RSA public key has %d bits, want at least %d", k.N.BitLen(), minRSABits)
		}
		v.rsaKey = k
		v.methods = append(v.methods, algRS256)
	}
	if len(cfg.EdPublicKey) > 0 {
		if bytes.Equal(cfg.HMACSecret, cfg.EdPublicKey) {
			return nil, errors.New("auth: the HMAC secret must not be the Ed25519 public key")
		}
		k, err := jwt.ParseEdPublicKeyFromPEM(cfg.EdPublicKey)
		if err != nil {
			return nil, fmt.Errorf("auth: Ed25519 public key: %w", err)
		}
		v.edKey = k.(ed25519.PublicKey) // ParseEdPublicKeyFromPEM guarantees the type
		v.methods = append(v.methods, algEdDSA)
	}
	if len(v.methods) == 0 {
		return nil, errors.New("auth: no token verification key configured")
	}
	if cfg.Leeway < 0 {
		return nil, errors.New("auth: negative leeway")
	}
	v.leeway = cfg.Leeway
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	)
	return v, nil
}

// Leeway is the clock skew allowed on exp, nbf and iat (VerifierConfig):
// a token is accepted until exp + Leeway.
func (v *Verifier) Leeway() time.Duration { return v.leeway }

// Verify checks token's signature, algorithm, time claims and shape, and
// returns its claims. Every error wraps ErrInvalidToken; an expired token's
// error also wraps ErrTokenExpired.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, invalid("missing token")
	}
	if len(token) > MaxTokenBytes {
		return nil, invalid(fmt.Sprintf("token longer than %d bytes", MaxTokenBytes))
	}
	var wc wireClaims
	tok, err := v.parser.ParseWithClaims(token, &wc, v.key)
	if err != nil {
		return nil, v.explain(tok, err)
	}
	c := &Claims{UserID: wc.Subject, Name: wc.Name}
	if err := validateUserID(c.UserID); err != nil {
		return nil, invalid(err.Error())
	}
	if err := validateName(c.Name); err != nil {
		return nil, invalid(err.Error())
	}
	c.ExpiresAt = wc.ExpiresAt.Time // present: WithExpirationRequired
	if wc.IssuedAt != nil {
		c.IssuedAt = wc.IssuedAt.Time
	}
	if c.Rooms, err = decodeRooms(wc.Rooms); err != nil {
		return nil, invalid("malformed rooms claim: " + err.Error())
	}
	return c, nil
}

// key is the jwt.Keyfunc: it returns the key of the token's algorithm, which
// the parser has already checked is one of v.methods. Choosing the key by
// algorithm is what defeats algorithm confusion.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case algHS256:
		return v.hmacKey, nil
	case algRS256:
		return v.rsaKey, nil
	case algEdDSA:
		return v.edKey, nil
	}
	return nil, fmt.Errorf("algorithm %q not configured", t.Method.Alg())
}

// explain turns a jwt parse error into an ErrInvalidToken saying why.
func (v *Verifier) explain(tok *jwt.Token, err error) error {
	if tok != nil && !errors.Is(err, jwt.ErrTokenMalformed) {
		alg, _ := tok.Header["alg"].(string)
		switch {
		case alg == "":
			return invalid("missing or invalid alg header")
		case strings.EqualFold(alg, "none"):
			return invalid(`alg "none" is not allowed`)
		case !slices.Contains(v.methods, alg):
			return invalid(fmt.Sprintf("algorithm %q is not accepted (want %s)", alg, strings.Join(v.methods, " or ")))
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return invalid("malformed token")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return invalid("signature is invalid")
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return invalid("token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return invalid("token is issued in the future (iat)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return invalid("missing exp claim")
	}
	return invalid("token could not be verified")
}

func invalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, reason)
}

// decodeRooms parses the raw "rooms" claim: absent or null means no grants;
// otherwise it must be an object whose values are arrays of permission names.
func decodeRooms(raw json.RawMessage) (map[string]Perm, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, errors.New("want an object")
	}
	m := make(map[string][]string, len(obj))
	for pattern, val := range obj {
		var names []string
		if val = bytes.TrimSpace(val); len(val) == 0 || val[0] != '[' || json.Unmarshal(val, &names) != nil {
			return nil, fmt.Errorf("room pattern %q: want an array of permission names", pattern)
		}
		m[pattern] = names
	}
	return ParseRooms(m)
}

// validateUserID checks a user id ("sub"): 1..128 characters of valid UTF-8,
// not blank, no control characters.
func validateUserID(id string) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("missing or empty sub claim")
	}
	return validateText("sub", id, MaxUserIDLen)
}

// validateName checks a display name: at most 128 characters of valid UTF-8,
// no control characters.
func validateName(name string) error {
	return validateText("name", name, MaxNameLen)
}

func validateText(claim, s string, max int) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s claim is not valid UTF-8", claim)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fmt.Errorf("%s claim longer than %d characters", claim, max)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return fmt.Errorf("%s claim contains control characters", claim)
	}
	return nil
}
