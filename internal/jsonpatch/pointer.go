package jsonpatch

import (
	"fmt"
	"strings"
)

// parsePointer splits an RFC 6901 JSON Pointer into unescaped reference
// tokens. "" (the whole document) yields an empty, non-nil slice.
func parsePointer(s string) ([]string, error) {
	if s == "" {
		return []string{}, nil
	}
	if s[0] != '/' {
		return nil, errorf(ErrInvalid, "JSON pointer %q does not start with /", s)
	}
	toks := make([]string, 0, strings.Count(s, "/"))
	rest := s[1:]
	for {
		tok, tail, more := strings.Cut(rest, "/")
		if strings.IndexByte(tok, '~') >= 0 {
			var err error
			if tok, err = unescapeToken(tok); err != nil {
				return nil, errorf(ErrInvalid, "JSON pointer %q: %v", s, err)
			}
		}
		toks = append(toks, tok)
		if !more {
			return toks, nil
		}
		rest = tail
	}
}

// unescapeToken decodes ~1 to / and ~0 to ~ in one left-to-right pass, which
// is equivalent to RFC 6901's "first ~1, then ~0" (so "~01" is "~1").
func unescapeToken(tok string) (string, error) {
	var b strings.Builder
	b.Grow(len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != '~' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(tok) {
			return "", fmt.Errorf("dangling ~ in token %q", tok)
		}
		i++
		switch tok[i] {
		case '0':
			b.WriteByte('~')
		case '1':
			b.WriteByte('/')
		default:
			return "", fmt.Errorf("invalid escape ~%c in token %q", tok[i], tok)
		}
	}
	return b.String(), nil
}

// parseIndex parses an array index token for an array of length n. "-" (the
// position after the last element) and n itself are accepted only when
// insert is true (the add operation).
func parseIndex(tok string, n int, insert bool) (int, error) {
	if tok == "-" {
		if insert {
			return n, nil
		}
		return 0, errorf(ErrInvalid, `array index "-" is only valid for add`)
	}
	if tok == "" || len(tok) > 1 && tok[0] == '0' {
		return 0, errorf(ErrInvalid, "invalid array index %q", tok)
	}
	i := 0
	for j := 0; j < len(tok); j++ {
		c := tok[j]
		if c < '0' || c > '9' {
			return 0, errorf(ErrInvalid, "invalid array index %q", tok)
		}
		if i > (hardMaxSize-9)/10 {
			return 0, errorf(ErrInvalid, "array index %s out of range", tok)
		}
		i = i*10 + int(c-'0')
	}
	if i > n || i == n && !insert {
		return 0, errorf(ErrInvalid, "array index %d out of range", i)
	}
	return i, nil
}

// isProperPrefix reports whether pointer a is a proper prefix of pointer b,
// token by token.
func isProperPrefix(a, b []string) bool {
	if len(a) >= len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
