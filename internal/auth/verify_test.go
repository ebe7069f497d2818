package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testNow is the fixed clock of the verification tests.
var testNow = time.Unix(1_700_000_000, 0)

var testSecret = []byte("test-hmac-secret-0123456789abcdef")

type testKeys struct {
	rsaPriv  *rsa.PrivateKey
	rsaPEM   []byte // PKIX public key
	rsaPKCS1 []byte // PKCS#1 public key
	edPriv   ed25519.PrivateKey
	edPEM    []byte
}

// keys generates the asymmetric keys once per test binary (RSA is slow).
var keys = sync.OnceValue(func() testKeys {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return testKeys{
		rsaPriv:  rk,
		rsaPEM:   pemPublic(&rk.PublicKey),
		rsaPKCS1: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rk.PublicKey)}),
		edPriv:   ek,
		edPEM:    pemPublic(ek.Public()),
	}
})

func pemPublic(k any) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// newTestVerifier builds a Verifier on the fixed clock.
func newTestVerifier(t testing.TB, cfg VerifierConfig) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	v.now = func() time.Time { return testNow }
	return v
}

// baseClaims are valid claims for testNow; tests copy and change them.
func baseClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":  "u1",
		"name": "Ada",
		"iat":  testNow.Unix(),
		"exp":  testNow.Add(time.Hour).Unix(),
	}
}

// with returns baseClaims changed by kv pairs; a nil value deletes the claim.
func with(kv ...any) jwt.MapClaims {
	c := baseClaims()
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(c, k)
		} else {
			c[k] = kv[i+1]
		}
	}
	return c
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatalf("signing %s: %v", m.Alg(), err)
	}
	return s
}

func hs(t testing.TB, c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, c) }

// rawToken assembles a token from a literal header, claims and signature.
func rawToken(header string, claims any, sig []byte) string {
	b, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(b) + "." + enc.EncodeToString(sig)
}

func TestVerifyValid(t *testing.T) {
	k := keys()
	all := VerifierConfig{HMACSecret: testSecret, RSAPublicKey: k.rsaPEM, EdPublicKey: k.edPEM}
	rooms := map[string]any{"team-*": []string{"read", "presence"}, "lobby": []string{"read", "write"}}
	tests := []struct {
		name  string
		cfg   VerifierConfig
		token string
	}{
		{"HS256", VerifierConfig{HMACSecret: testSecret}, hs(t, with("rooms", rooms))},
		{"RS256", VerifierConfig{RSAPublicKey: k.rsaPEM}, sign(t, jwt.SigningMethodRS256, k.rsaPriv, with("rooms", rooms))},
		{"RS256 PKCS1 PEM", VerifierConfig{RSAPublicKey: k.rsaPKCS1}, sign(t, jwt.SigningMethodRS256, k.rsaPriv, with("rooms", rooms))},
		{"EdDSA", VerifierConfig{EdPublicKey: k.edPEM}, sign(t, jwt.SigningMethodEdDSA, k.edPriv, with("rooms", rooms))},
		{"HS256 of three", all, hs(t, with("rooms", rooms))},
		{"RS256 of three", all, sign(t, jwt.SigningMethodRS256, k.rsaPriv, with("rooms", rooms))},
		{"EdDSA of three", all, sign(t, jwt.SigningMethodEdDSA, k.edPriv, with("rooms", rooms))},
	}
	want := &Claims{
		UserID:    "u1",
		Name:      "Ada",
		ExpiresAt: testNow.Add(time.Hour),
		IssuedAt:  testNow,
		Rooms:     map[string]Perm{"team-*": PermRead | PermPresence, "lobby": PermRead | PermWrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newTestVerifier(t, tt.cfg).Verify(tt.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			assertClaims(t, got, want)
		})
	}
}

func assertClaims(t *testing.T, got, want *Claims) {
	t.Helper()
	if got.UserID != want.UserID || got.Name != want.Name ||
		!got.ExpiresAt.Equal(want.ExpiresAt) || !got.IssuedAt.Equal(want.IssuedAt) ||
		!maps.Equal(got.Rooms, want.Rooms) {
		t.Errorf("claims = %+v, want %+v", got, want)
	}
}

func TestVerifyOptionalClaimsAbsent(t *testing.T) {
	v := newTestVerifier(t, VerifierConfig{HMACSecret: testSecret})
	exp := testNow.Add(time.Hour).Unix()
	for _, tt := range []struct {
		name  string
		token string
	}{
		{"no name, iat or rooms", hs(t, with("name", nil, "iat", nil))},
		{"rooms null", resign(rawToken(`{"alg":"HS256","typ":"JWT"}`, map[string]any{"sub": "u1", "exp": exp, "rooms": nil}, nil), testSecret)},
		{"rooms empty object", hs(t, with("name", nil, "iat", nil, "rooms", map[string]any{}))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.UserID != "u1" || c.Name != "" || !c.IssuedAt.IsZero() || len(c.Rooms) != 0 {
				t.Errorf("claims = %+v, want sub u1, empty name, zero iat, no rooms", c)
			}
			if p := c.RoomPerms("lobby"); p != 0 {
				t.Errorf("RoomPerms without grants = %v, want none", p)
			}
		})
	}
}

// resign replaces tok's signature with a valid HS256 one over its first two
// segments, whatever its header says.
func resign(tok string, secret []byte) string {
	i := strings.LastIndexByte(tok, '.')
	sig, err := jwt.SigningMethodHS256.Sign(tok[:i], secret)
	if err != nil {
		panic(err)
	}
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

func TestVerifyRejects(t *testing.T) {
	k := keys()
	hsOnly := VerifierConfig{HMACSecret: testSecret}
	rsOnly := VerifierConfig{RSAPublicKey: k.rsaPEM}
	edOnly := VerifierConfig{EdPublicKey: k.edPEM}
	hsAndRS := VerifierConfig{HMACSecret: testSecret, RSAPublicKey: k.rsaPEM}

	noneToken := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, baseClaims())
	valid := hs(t, baseClaims())
	tampered := func() string { // valid signature, claims swapped afterwards
		parts := strings.Split(valid, ".")
		b, _ := json.Marshal(with("sub", "admin"))
		parts[1] = base64.RawURLEncoding.EncodeToString(b)
		return strings.Join(parts, ".")
	}()
	otherSecret := sign(t, jwt.SigningMethodHS256, []byte("some-other-secret-0123456789abcd"), baseClaims())
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)

	tests := []struct {
		name    string
		cfg     VerifierConfig
		token   string
		reason  string // substring of the error
		expired bool
	}{
		{"empty", hsOnly, "", "missing token", false},
		{"garbage", hsOnly, "not-a-jwt", "malformed", false},
		{"four segments", hsOnly, valid + ".x", "malformed", false},
		{"bad base64 header", hsOnly, "!!!." + strings.SplitN(valid, ".", 2)[1], "malformed", false},
		{"alg none unsigned", hsOnly, noneToken, `alg "none"`, false},
		{"alg none with HMAC signature", hsOnly, resign(rawToken(`{"alg":"none","typ":"JWT"}`, baseClaims(), nil), testSecret), `alg "none"`, false},
		{"alg NONE", hsOnly, rawToken(`{"alg":"NONE"}`, baseClaims(), nil), `alg "none"`, false},
		{"alg missing", hsOnly, resign(rawToken(`{"typ":"JWT"}`, baseClaims(), nil), testSecret), "alg header", false},
		{"alg not a string", hsOnly, resign(rawToken(`{"alg":256}`, baseClaims(), nil), testSecret), "alg header", false},
		{"HS256 when only RS256", rsOnly, valid, `"HS256" is not accepted`, false},
		{"HS256 when only EdDSA", edOnly, valid, `"HS256" is not accepted`, false},
		{"RS256 when only HS256", hsOnly, sign(t, jwt.SigningMethodRS256, k.rsaPriv, baseClaims()), `"RS256" is not accepted`, false},
		{"EdDSA when only HS256", hsOnly, sign(t, jwt.SigningMethodEdDSA, k.edPriv, baseClaims()), `"EdDSA" is not accepted`, false},
		{"HS384 when HS256", hsOnly, sign(t, jwt.SigningMethodHS384, testSecret, baseClaims()), `"HS384" is not accepted`, false},
		{"PS256 when RS256", rsOnly, sign(t, jwt.SigningMethodPS256, k.rsaPriv, baseClaims()), `"PS256" is not accepted`, false},
		{"unknown alg", hsOnly, resign(rawToken(`{"alg":"XS999"}`, baseClaims(), nil), testSecret), `"XS999" is not accepted`, false},
		{"wrong HMAC secret", hsOnly, otherSecret, "signature is invalid", false},
		{"tampered claims", hsOnly, tampered, "signature is invalid", false},
		{"truncated signature", hsOnly, valid[:len(valid)-3], "signature is invalid", false},
		{"RS256 signed by other key", rsOnly, sign(t, jwt.SigningMethodRS256, mustRSA(t), baseClaims()), "signature is invalid", false},
		{"EdDSA signed by other key", edOnly, sign(t, jwt.SigningMethodEdDSA, otherEd, baseClaims()), "signature is invalid", false},
		{"RS256 confusion with HS256 secret configured", hsAndRS, sign(t, jwt.SigningMethodHS256, k.rsaPEM, baseClaims()), "signature is invalid", false},
		{"expired", hsOnly, hs(t, with("exp", testNow.Add(-time.Second).Unix())), "expired", true},
		{"expired at now", hsOnly, hs(t, with("exp", testNow.Unix())), "expired", true},
		{"expired and bad signature", hsOnly, sign(t, jwt.SigningMethodHS256, []byte("nope-nope-nope-nope-nope-nope-00"), with("exp", 1)), "signature is invalid", false},
		{"not yet valid", hsOnly, hs(t, with("nbf", testNow.Add(time.Minute).Unix())), "not valid yet", false},
		{"issued in the future", hsOnly, hs(t, with("iat", testNow.Add(time.Minute).Unix())), "issued in the future", false},
		{"missing exp", hsOnly, hs(t, with("exp", nil)), "missing exp", false},
		{"exp not a number", hsOnly, hs(t, with("exp", "tomorrow")), "malformed", false},
		{"missing sub", hsOnly, hs(t, with("sub", nil)), "sub", false},
		{"empty sub", hsOnly, hs(t, with("sub", "")), "sub", false},
		{"blank sub", hsOnly, hs(t, with("sub", "  ")), "sub", false},
		{"sub too long", hsOnly, hs(t, with("sub", strings.Repeat("u", MaxUserIDLen+1))), "sub claim longer", false},
		{"sub with control character", hsOnly, hs(t, with("sub", "u1\n")), "control", false},
		{"sub not a string", hsOnly, hs(t, with("sub", 42)), "malformed", false},
		{"name too long", hsOnly, hs(t, with("name", strings.Repeat("é", MaxNameLen+1))), "name claim longer", false},
		{"name not a string", hsOnly, hs(t, with("name", []string{"a"})), "malformed", false},
		{"rooms is an array", hsOnly, hs(t, with("rooms", []string{"lobby"})), "rooms", false},
		{"rooms is a string", hsOnly, hs(t, with("rooms", "lobby")), "rooms", false},
		{"rooms value is a string", hsOnly, hs(t, with("rooms", map[string]any{"lobby": "read"})), "rooms", false},
		{"rooms value is null", hsOnly, hs(t, with("rooms", map[string]any{"lobby": nil})), "rooms", false},
		{"rooms value is an object", hsOnly, hs(t, with("rooms", map[string]any{"lobby": map[string]any{"read": true}})), "rooms", false},
		{"rooms value holds a number", hsOnly, hs(t, with("rooms", map[string]any{"lobby": []any{"read", 1}})), "rooms", false},
		{"rooms unknown permission", hsOnly, hs(t, with("rooms", map[string]any{"lobby": []string{"read", "admin"}})), `unknown permission "admin"`, false},
		{"rooms permission wrong case", hsOnly, hs(t, with("rooms", map[string]any{"lobby": []string{"Read"}})), "unknown permission", false},
		{"rooms empty pattern", hsOnly, hs(t, with("rooms", map[string]any{"": []string{"read"}})), "empty room pattern", false},
		{"rooms pattern with slash", hsOnly, hs(t, with("rooms", map[string]any{"a/b": []string{"read"}})), "not allowed", false},
		{"longer than 8 KiB", hsOnly, hs(t, with("pad", strings.Repeat("x", MaxTokenBytes))), "longer than 8192 bytes", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := newTestVerifier(t, tt.cfg).Verify(tt.token)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", c)
			}
			if c != nil {
				t.Errorf("Verify returned claims %+v with error", c)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("error %q does not wrap ErrInvalidToken", err)
			}
			if got := errors.Is(err, ErrTokenExpired); got != tt.expired {
				t.Errorf("errors.Is(%q, ErrTokenExpired) = %v, want %v", err, got, tt.expired)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
		})
	}
}

func mustRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestVerifyRSAKeyConfusion is the classic attack: the attacker knows the
// server's RSA public key and signs an HS256 token using the PEM bytes as the
// HMAC secret, hoping the verifier feeds its "key" to HMAC.
func TestVerifyRSAKeyConfusion(t *testing.T) {
	k := keys()
	forged := sign(t, jwt.SigningMethodHS256, k.rsaPEM, with("sub", "admin", "rooms", map[string]any{"*": []string{"read", "presence", "write"}}))
	for _, tt := range []struct {
		name string
		cfg  VerifierConfig
	}{
		{"RS256 only", VerifierConfig{RSAPublicKey: k.rsaPEM}},
		{"RS256 and EdDSA", VerifierConfig{RSAPublicKey: k.rsaPEM, EdPublicKey: k.edPEM}},
		{"RS256 and HS256", VerifierConfig{RSAPublicKey: k.rsaPEM, HMACSecret: testSecret}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := newTestVerifier(t, tt.cfg).Verify(forged)
			if err == nil {
				t.Fatalf("forged HS256 token accepted as %+v", c)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("error %q does not wrap ErrInvalidToken", err)
			}
		})
	}
	// And the configuration that would make the attack work is refused.
	if _, err := NewVerifier(VerifierConfig{RSAPublicKey: k.rsaPEM, HMACSecret: k.rsaPEM}); err == nil {
		t.Error("NewVerifier accepted the RSA public key as HMAC secret")
	}
	if _, err := NewVerifier(VerifierConfig{EdPublicKey: k.edPEM, HMACSecret: k.edPEM}); err == nil {
		t.Error("NewVerifier accepted the Ed25519 public key as HMAC secret")
	}
}

func TestVerifyLeeway(t *testing.T) {
	const leeway = 30 * time.Second
	tests := []struct {
		name   string
		leeway time.Duration
		c      jwt.MapClaims
		ok     bool
	}{
		{"expired 10s ago, leeway 30s", leeway, with("exp", testNow.Add(-10*time.Second).Unix()), true},
		{"expired 10s ago, no leeway", 0, with("exp", testNow.Add(-10*time.Second).Unix()), false},
		{"expired 31s ago, leeway 30s", leeway, with("exp", testNow.Add(-31*time.Second).Unix()), false},
		{"nbf in 10s, leeway 30s", leeway, with("nbf", testNow.Add(10*time.Second).Unix()), true},
		{"nbf in 10s, no leeway", 0, with("nbf", testNow.Add(10*time.Second).Unix()), false},
		{"nbf in 31s, leeway 30s", leeway, with("nbf", testNow.Add(31*time.Second).Unix()), false},
		{"iat in 10s, leeway 30s", leeway, with("iat", testNow.Add(10*time.Second).Unix()), true},
		{"iat in 10s, no leeway", 0, with("iat", testNow.Add(10*time.Second).Unix()), false},
		{"iat in 31s, leeway 30s", leeway, with("iat", testNow.Add(31*time.Second).Unix()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, VerifierConfig{HMACSecret: testSecret, Leeway: tt.leeway})
			_, err := v.Verify(hs(t, tt.c))
			if (err == nil) != tt.ok {
				t.Errorf("Verify error = %v, want ok = %v", err, tt.ok)
			}
		})
	}
}

// TestVerifyLengthLimit checks the boundary: the longest token not above
// MaxTokenBytes verifies, one a few bytes longer does not.
func TestVerifyLengthLimit(t *testing.T) {
	v := newTestVerifier(t, VerifierConfig{HMACSecret: testSecret})
	var under, over string
	for n := MaxTokenBytes * 3 / 4 * 9 / 10; over == ""; n++ {
		tok := hs(t, with("pad", strings.Repeat("x", n)))
		if len(tok) <= MaxTokenBytes {
			under = tok
		} else {
			over = tok
		}
	}
	if len(under) < MaxTokenBytes-3 {
		t.Fatalf("test setup: longest token under the limit is %d bytes", len(under))
	}
	if _, err := v.Verify(under); err != nil {
		t.Errorf("%d-byte token: %v", len(under), err)
	}
	if _, err := v.Verify(over); err == nil {
		t.Errorf("%d-byte token accepted", len(over))
	}
}

func TestNewVerifierErrors(t *testing.T) {
	k := keys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  VerifierConfig
	}{
		{"no key", VerifierConfig{}},
		{"empty secret only", VerifierConfig{HMACSecret: []byte{}, Leeway: time.Second}},
		{"RSA not PEM", VerifierConfig{RSAPublicKey: []byte("not a pem")}},
		{"RSA PEM of garbage", VerifierConfig{RSAPublicKey: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}},
		{"RSA slot holds Ed25519 key", VerifierConfig{RSAPublicKey: k.edPEM}},
		{"RSA key 1024 bits", VerifierConfig{RSAPublicKey: pemPublic(&small.PublicKey)}},
		{"Ed not PEM", VerifierConfig{EdPublicKey: []byte("not a pem")}},
		{"Ed slot holds RSA key", VerifierConfig{EdPublicKey: k.rsaPEM}},
		{"bad Ed with good secret", VerifierConfig{HMACSecret: testSecret, EdPublicKey: []byte("x")}},
		{"negative leeway", VerifierConfig{HMACSecret: testSecret, Leeway: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := NewVerifier(tt.cfg); err == nil {
				t.Errorf("NewVerifier succeeded: %+v", v)
			}
		})
	}
}

// TestVerifierCopiesSecret: changing the caller's slice afterwards must not
// change what the Verifier trusts.
func TestVerifierCopiesSecret(t *testing.T) {
	secret := []byte("mutable-secret-0123456789abcdef!")
	v := newTestVerifier(t, VerifierConfig{HMACSecret: secret})
	tok := sign(t, jwt.SigningMethodHS256, []byte("mutable-secret-0123456789abcdef!"), baseClaims())
	secret[0] = 'X'
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("Verify after caller changed its secret slice: %v", err)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	v := newTestVerifier(t, VerifierConfig{HMACSecret: testSecret})
	good, bad := hs(t, baseClaims()), hs(t, with("exp", 1))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for j := 0; j < 50; j++ {
				if _, err := v.Verify(good); err != nil {
					t.Errorf("good token: %v", err)
					return
				}
				if _, err := v.Verify(bad); !errors.Is(err, ErrTokenExpired) {
					t.Errorf("expired token: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := newTestVerifier(b, VerifierConfig{HMACSecret: testSecret})
	tok := hs(b, with("rooms", map[string]any{"team-*": []string{"read", "presence"}, "lobby": []string{"read", "write"}}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
