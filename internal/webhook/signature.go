package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header that carries a webhook's signature
// (PROTOCOL.md v1.1 §7):
//
//	Parley-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
const SignatureHeader = "Parley-Signature"

// Sign returns the Parley-Signature value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Errors of Verify. Each is wrapped with detail; test with errors.Is.
var (
	// ErrMalformed: the header is missing or not t=<digits>,v1=<64 hex>.
	ErrMalformed = errors.New("malformed Parley-Signature header")
	// ErrMismatch: no v1 value is the HMAC of the body with this secret
	// (another secret, or a body changed on the way).
	ErrMismatch = errors.New("signature does not match the body")
	// ErrExpired: the timestamp is further from now than the tolerance
	// (a replayed or badly delayed request, or a clock off).
	ErrExpired = errors.New("signature timestamp outside the tolerance")
)

// Signature is a parsed Parley-Signature header: the timestamp and every
// v1 value (more than one may be sent while a secret is rotated; one
// matching is enough).
type Signature struct {
	Timestamp int64
	V1        [][]byte
}

// MaxHeaderLen bounds what ParseSignature reads (16 v1 values fit).
const MaxHeaderLen = 2048

// ParseSignature parses "t=<unix>,v1=<hex>[,v1=<hex>...]". Unknown keys
// (a future v2) are skipped; t must appear once and at least one v1 of 32
// bytes must be present.
func ParseSignature(header string) (Signature, error) {
	var sig Signature
	if header == "" {
		return sig, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(header) > MaxHeaderLen {
		return sig, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxHeaderLen)
	}
	seenT := false
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Signature{}, fmt.Errorf("%w: %q is not key=value", ErrMalformed, part)
		}
		switch k {
		case "t":
			if seenT {
				return Signature{}, fmt.Errorf("%w: t given twice", ErrMalformed)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || v == "" || v[0] == '+' {
				return Signature{}, fmt.Errorf("%w: t=%q is not unix seconds", ErrMalformed, v)
			}
			sig.Timestamp, seenT = n, true
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return Signature{}, fmt.Errorf("%w: v1 is not 64 hex digits", ErrMalformed)
			}
			sig.V1 = append(sig.V1, b)
		}
	}
	if !seenT {
		return Signature{}, fmt.Errorf("%w: no t=", ErrMalformed)
	}
	if len(sig.V1) == 0 {
		return Signature{}, fmt.Errorf("%w: no v1=", ErrMalformed)
	}
	return sig, nil
}

// Verify checks a webhook the way a receiver should: header is the
// Parley-Signature value, body the raw request body (before any JSON
// parsing), tolerance the largest accepted distance between the
// signature's timestamp and now (0 = do not check the time). It returns
// the signature's time, and nil when one v1 is the HMAC-SHA256 of
// "<t>.<body>" with secret (compared in constant time) and t is within
// tolerance.
func Verify(secret []byte, header string, body []byte, tolerance time.Duration, now time.Time) (time.Time, error) {
	sig, err := ParseSignature(header)
	if err != nil {
		return time.Time{}, err
	}
	t := time.Unix(sig.Timestamp, 0)
	want := mac(secret, strconv.FormatInt(sig.Timestamp, 10), body)
	ok := false
	for _, v := range sig.V1 {
		if hmac.Equal(v, want) {
			ok = true
		}
	}
	if !ok {
		return t, ErrMismatch
	}
	if tolerance > 0 {
		d := now.Sub(t)
		if d < 0 {
			d = -d
		}
		if d > tolerance {
			return t, fmt.Errorf("%w: signed at %s, %s from now (tolerance %s)", ErrExpired,
				t.UTC().Format(time.RFC3339), d.Round(time.Second), tolerance)
		}
	}
	return t, nil
}
