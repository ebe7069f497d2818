package auth

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for new hashes: OWASP's minimum recommendation (19 MiB,
// 2 passes, 1 lane). One check takes about 45 ms on one 2.5 GHz Xeon core
// (BenchmarkCheckPassword), so a 2-core server manages some 40 logins a
// second.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Bounds on parameters read back from a stored hash, so that a corrupted or
// planted hash cannot make CheckPassword allocate or spin without limit.
const (
	maxArgonMemoryKiB = 256 * 1024
	maxArgonTime      = 16
	maxArgonThreads   = 16
	minArgonSaltLen   = 8
	minArgonKeyLen    = 16
	maxArgonKeyLen    = 128
)

// ErrMalformedHash is wrapped by CheckPassword's error when the stored hash
// is not an argon2id PHC string it can check.
var ErrMalformedHash = errors.New("malformed password hash")

// phc is the unpadded standard base64 that the PHC string format uses.
var phc = base64.RawStdEncoding

// dummyHash is a hash, with the current parameters, of a password nobody
// knows; DummyCheck checks against it. TestDummyHashUsesCurrentParams keeps
// it in step with the constants above.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$cGFybGV5LWR1bW15c2FsdA$VaMC8ytB7LeiIFJ7TfpdQoqRo8PkC1Z9zxwK68uOb0o"

// HashPassword hashes pw with argon2id and a random salt, and returns it in
// PHC string format: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func HashPassword(pw string) (string, error) {
	salt := randomBytes(argonSaltLen)
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		phc.EncodeToString(salt), phc.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches hash, a PHC string made by
// HashPassword (its parameters are read from the string, so hashes made with
// older parameters keep working). The comparison takes constant time. A
// wrong password is (false, nil); a hash it cannot read is (false, err) with
// err wrapping ErrMalformedHash.
func CheckPassword(hash, pw string) (bool, error) {
	p, err := parsePHC(hash)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(pw), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1, nil
}

// DummyCheck spends as long as CheckPassword does on a hash with the current
// parameters, and always fails. Call it when a login names an unknown user,
// so that response time does not reveal which usernames exist.
func DummyCheck() {
	_, _ = CheckPassword(dummyHash, "parley-dummy-password")
}

type phcParams struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

// parsePHC reads $argon2id$v=19$m=M,t=T,p=P$salt$hash.
func parsePHC(s string) (phcParams, error) {
	var p phcParams
	bad := func(why string) (phcParams, error) {
		return phcParams{}, fmt.Errorf("%w: %s", ErrMalformedHash, why)
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return bad("want $argon2id$v=19$m=...,t=...,p=...$salt$hash")
	}
	if parts[1] != "argon2id" {
		return bad(fmt.Sprintf("algorithm %q, want argon2id", parts[1]))
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad(fmt.Sprintf("version %q, want v=%d", parts[2], argon2.Version))
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return bad("want parameters m=...,t=...,p=...")
	}
	var vals [3]uint64
	for i, name := range [3]string{"m", "t", "p"} {
		num, ok := strings.CutPrefix(params[i], name+"=")
		if !ok {
			return bad(fmt.Sprintf("parameter %d: want %s=", i+1, name))
		}
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil || n == 0 {
			return bad(fmt.Sprintf("parameter %s: %q is not a positive integer", name, num))
		}
		vals[i] = n
	}
	m, t, th := vals[0], vals[1], vals[2]
	switch {
	case m > maxArgonMemoryKiB:
		return bad(fmt.Sprintf("memory %d KiB above %d", m, maxArgonMemoryKiB))
	case t > maxArgonTime:
		return bad(fmt.Sprintf("time %d above %d", t, maxArgonTime))
	case th > maxArgonThreads:
		return bad(fmt.Sprintf("parallelism %d above %d", th, maxArgonThreads))
	case m < 8*th:
		return bad(fmt.Sprintf("memory %d KiB below 8 KiB per lane", m))
	}
	p.memory, p.time, p.threads = uint32(m), uint32(t), uint8(th)
	var err error
	if p.salt, err = phc.Strict().DecodeString(parts[4]); err != nil || len(p.salt) < minArgonSaltLen {
		return bad("salt is not base64 of at least 8 bytes")
	}
	if p.key, err = phc.Strict().DecodeString(parts[5]); err != nil || len(p.key) < minArgonKeyLen || len(p.key) > maxArgonKeyLen {
		return bad("hash is not base64 of 16 to 128 bytes")
	}
	return p, nil
}
