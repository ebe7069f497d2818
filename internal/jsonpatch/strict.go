package jsonpatch

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Strict parsing (Limits.RejectInvalidText, Limits.RejectDuplicateNames)
// makes sure that the batch a server relays byte for byte means the same
// to every JSON parser as the batch it stored: no text that decoders
// repair differently (invalid UTF-8, unpaired surrogate escapes) and no
// object with two members of the same name (RFC 8259 §4; I-JSON, RFC 7493
// §2.3), which decoders resolve differently (last wins, first wins, or
// refuse).
//
// Both are found in one pass over the bytes (scanText). Duplicate names
// are found by counting: in well-formed JSON every ':' outside a string
// introduces exactly one object member, and decoding into map[string]any
// keeps one entry per distinct name, so an object text holds a duplicate
// name exactly when its members outnumber the entries of the decoded
// maps. Names compare after unescaping ("a" and "\u0061" are the same).

// scanText checks raw for invalid text (when text is set) and, when
// count is set, counts object members per element, appending to members
// and returning it: with elemDepth 2, the elements are those of the
// top-level array and members[i] is
// the number of ':' inside element i (elements that are not containers
// are not counted and get no entry); with elemDepth 1 the one top-level
// value is element 0. At most maxElems entries are recorded (0 means no
// bound). It does not check that raw is well-formed; its errors carry no
// part of raw.
func scanText(raw []byte, text, count bool, members []int, maxElems, elemDepth int) ([]int, error) {
	if text && !utf8.Valid(raw) {
		return members, errorf(ErrInvalid, "text is not valid UTF-8")
	}
	depth, elem := 0, -1
	n := len(raw)
	for i := 0; i < n; {
		switch raw[i] {
		case '"':
			// Jump from quote to quote (IndexByte is vectorised); only the
			// backslashes before the next quote need a look.
			i++
			for {
				q := bytes.IndexByte(raw[i:], '"')
				if q < 0 {
					return members, nil // malformed; the decoder reports it
				}
				e := bytes.IndexByte(raw[i:i+q], '\\')
				if e < 0 {
					i += q + 1
					break
				}
				i += e
				if i+1 >= n {
					return members, nil
				}
				if raw[i+1] != 'u' || !text {
					i += 2 // \" \\ \/ \b \f \n \r \t \u.... (or malformed)
					continue
				}
				c16, ok := hex4(raw, i+2)
				if !ok {
					i += 2
					continue
				}
				i += 6
				switch {
				case c16 >= 0xDC00 && c16 <= 0xDFFF:
					return members, errorf(ErrInvalid, "string holds an unpaired surrogate escape (not valid Unicode)")
				case c16 >= 0xD800 && c16 <= 0xDBFF:
					lo, ok := uint16(0), false
					if i+1 < n && raw[i] == '\\' && raw[i+1] == 'u' {
						lo, ok = hex4(raw, i+2)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return members, errorf(ErrInvalid, "string holds an unpaired surrogate escape (not valid Unicode)")
					}
					i += 6
				}
			}
		case '{', '[':
			depth++
			if depth == elemDepth && count {
				elem++
				if maxElems <= 0 || elem < maxElems {
					members = append(members, 0)
				}
			}
			i++
		case '}', ']':
			depth--
			i++
		case ':':
			if count && depth >= elemDepth && elem >= 0 && elem < len(members) {
				members[elem]++
			}
			i++
		default:
			i++
		}
	}
	return members, nil
}

// CheckText reports (ErrInvalid) whether the JSON text raw holds anything
// that is not valid Unicode: bytes that are not UTF-8, or a \u escape of a
// surrogate that is not a high surrogate (D800–DBFF) immediately followed
// by a \u escape of a low one (DC00–DFFF). It does not check that raw is
// well-formed JSON (a backslash can only occur inside a string there), and
// its errors carry no part of raw.
func CheckText(raw []byte) error {
	_, err := scanText(raw, true, false, nil, 0, 0)
	return err
}

// CheckUniqueNames reports (ErrInvalid) whether the JSON value raw holds
// an object, at any depth, with two members of the same name (compared
// after unescaping), or is not well-formed JSON. Its errors carry no part
// of raw. It costs one scan and one decode of raw.
func CheckUniqueNames(raw []byte) error {
	var buf [1]int
	count, err := scanText(raw, false, true, buf[:0], 1, 1)
	if err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return errorf(ErrInvalid, "malformed JSON")
	}
	want := 0
	if len(count) > 0 {
		want = count[0]
	}
	if plainMembers(v) != want {
		return errDuplicateName
	}
	return nil
}

var errDuplicateName = errorf(ErrInvalid, "an object has two members of the same name")

// plainMembers returns the number of members of all the objects in a
// decoded JSON value.
func plainMembers(v any) int {
	switch x := v.(type) {
	case map[string]any:
		n := len(x)
		for _, e := range x {
			n += plainMembers(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range x {
			n += plainMembers(e)
		}
		return n
	}
	return 0
}
