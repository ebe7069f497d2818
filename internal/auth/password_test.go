package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

var phcRE = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestPasswordRoundTrip(t *testing.T) {
	for _, pw := range []string{"correct horse battery staple", "", "пароль 🔑", strings.Repeat("x", 1000)} {
		h, err := HashPassword(pw)
		if err != nil {
			t.Fatalf("HashPassword: %v", err)
		}
		if !phcRE.MatchString(h) {
			t.Errorf("hash %q is not in the expected PHC form", h)
		}
		if ok, err := CheckPassword(h, pw); !ok || err != nil {
			t.Errorf("CheckPassword(right password %q) = %v, %v", pw, ok, err)
		}
		for _, wrong := range []string{pw + "x", strings.ToUpper(pw) + "!", "x" + pw[min(1, len(pw)):]} {
			if wrong == pw {
				continue
			}
			if ok, err := CheckPassword(h, wrong); ok || err != nil {
				t.Errorf("CheckPassword(wrong password %q for %q) = %v, %v; want false, nil", wrong, pw, ok, err)
			}
		}
	}
}

func TestHashPasswordSalted(t *testing.T) {
	a, _ := HashPassword("same")
	b, _ := HashPassword("same")
	if a == b {
		t.Errorf("two hashes of the same password are equal: %s", a)
	}
}

// TestCheckPasswordForeignHash checks a hash built directly with
// x/crypto/argon2 and other parameters: CheckPassword must read the
// parameters from the string, not assume its own.
func TestCheckPasswordForeignHash(t *testing.T) {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte("hunter2"), salt, 3, 8*1024, 2, 24)
	enc := base64.RawStdEncoding
	h := fmt.Sprintf("$argon2id$v=19$m=8192,t=3,p=2$%s$%s", enc.EncodeToString(salt), enc.EncodeToString(key))
	if ok, err := CheckPassword(h, "hunter2"); !ok || err != nil {
		t.Errorf("CheckPassword(foreign hash, right) = %v, %v", ok, err)
	}
	if ok, err := CheckPassword(h, "hunter3"); ok || err != nil {
		t.Errorf("CheckPassword(foreign hash, wrong) = %v, %v", ok, err)
	}
}

func TestCheckPasswordTampered(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(h, "$") // "", argon2id, v=19, m=..., salt, hash
	join := func(p ...string) string { return strings.Join(p, "$") }
	flip := func(s string) string { // change one base64 character, keep length
		c := byte('A')
		if s[5] == 'A' {
			c = 'B'
		}
		return s[:5] + string(c) + s[6:]
	}
	tests := []struct {
		name      string
		hash      string
		malformed bool // false: parses, but must not match
	}{
		{"hash byte changed", join(parts[0], parts[1], parts[2], parts[3], parts[4], flip(parts[5])), false},
		{"salt changed", join(parts[0], parts[1], parts[2], parts[3], flip(parts[4]), parts[5]), false},
		{"time changed", join(parts[0], parts[1], parts[2], "m=19456,t=3,p=1", parts[4], parts[5]), false},
		{"memory changed", join(parts[0], parts[1], parts[2], "m=19457,t=2,p=1", parts[4], parts[5]), false},
		{"empty", "", true},
		{"plain text", "s3cret", true},
		{"argon2i", join(parts[0], "argon2i", parts[2], parts[3], parts[4], parts[5]), true},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", true},
		{"version 16", join(parts[0], parts[1], "v=16", parts[3], parts[4], parts[5]), true},
		{"no version", join(parts[0], parts[1], parts[3], parts[4], parts[5]), true},
		{"missing hash", join(parts[0], parts[1], parts[2], parts[3], parts[4]), true},
		{"extra field", h + "$x", true},
		{"params reordered", join(parts[0], parts[1], parts[2], "t=2,m=19456,p=1", parts[4], parts[5]), true},
		{"param not a number", join(parts[0], parts[1], parts[2], "m=lots,t=2,p=1", parts[4], parts[5]), true},
		{"zero time", join(parts[0], parts[1], parts[2], "m=19456,t=0,p=1", parts[4], parts[5]), true},
		{"zero lanes", join(parts[0], parts[1], parts[2], "m=19456,t=2,p=0", parts[4], parts[5]), true},
		{"memory too large", join(parts[0], parts[1], parts[2], "m=4194304,t=2,p=1", parts[4], parts[5]), true},
		{"time too large", join(parts[0], parts[1], parts[2], "m=19456,t=1000,p=1", parts[4], parts[5]), true},
		{"lanes too many", join(parts[0], parts[1], parts[2], "m=19456,t=2,p=255", parts[4], parts[5]), true},
		{"memory below 8 KiB per lane", join(parts[0], parts[1], parts[2], "m=8,t=2,p=2", parts[4], parts[5]), true},
		{"negative memory", join(parts[0], parts[1], parts[2], "m=-1,t=2,p=1", parts[4], parts[5]), true},
		{"salt not base64", join(parts[0], parts[1], parts[2], parts[3], "!!!!!!!!!!!!", parts[5]), true},
		{"salt too short", join(parts[0], parts[1], parts[2], parts[3], "AAAA", parts[5]), true},
		{"hash truncated", join(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5][:10]), true},
		{"hash non-canonical last character", join(parts[0], parts[1], parts[2], parts[3], parts[4], nonCanonical(parts[5])), true},
		{"hash padded", join(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]+"="), true},
		{"hash empty", join(parts[0], parts[1], parts[2], parts[3], parts[4], ""), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := CheckPassword(tt.hash, "s3cret")
			if ok {
				t.Fatalf("CheckPassword(%q) matched", tt.hash)
			}
			if got := errors.Is(err, ErrMalformedHash); got != tt.malformed {
				t.Errorf("CheckPassword(%q) error = %v, want malformed = %v", tt.hash, err, tt.malformed)
			}
		})
	}
}

// nonCanonical sets a padding bit in the last character of unpadded base64
// of a 32-byte value: lenient decoders read the same bytes from it.
func nonCanonical(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i|1])
}

// TestDummyHashUsesCurrentParams keeps DummyCheck as slow as a real check:
// its hash must carry exactly the parameters HashPassword uses today.
func TestDummyHashUsesCurrentParams(t *testing.T) {
	d, err := parsePHC(dummyHash)
	if err != nil {
		t.Fatalf("dummyHash does not parse: %v", err)
	}
	if d.memory != argonMemoryKiB || d.time != argonTime || d.threads != argonThreads || len(d.key) != argonKeyLen {
		t.Errorf("dummyHash parameters m=%d t=%d p=%d keylen=%d, want m=%d t=%d p=%d keylen=%d (regenerate it)",
			d.memory, d.time, d.threads, len(d.key), argonMemoryKiB, argonTime, argonThreads, argonKeyLen)
	}
	fresh, _ := HashPassword("x")
	r, _ := parsePHC(fresh)
	if len(r.salt) != len(d.salt) {
		t.Errorf("dummy salt %d bytes, real %d", len(d.salt), len(r.salt))
	}
	DummyCheck() // must not panic
}

func BenchmarkCheckPassword(b *testing.B) {
	h, _ := HashPassword("benchmark")
	for b.Loop() {
		if ok, _ := CheckPassword(h, "benchmark"); !ok {
			b.Fatal("no match")
		}
	}
}
