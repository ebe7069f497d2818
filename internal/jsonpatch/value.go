package jsonpatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxConvertDepth bounds the recursion when converting caller-supplied
// values (which, unlike parsed JSON, may even be cyclic).
const maxConvertDepth = 10000

// fromPlain converts a decoded JSON value (nil, bool, string, json.Number,
// map[string]any, []any) into the internal representation, with containers
// writable by batch gen. Other Go values are normalised through
// encoding/json (so float64 1.5 becomes json.Number("1.5")).
func fromPlain(v any, gen uint64) (any, error) {
	return convert(v, gen, 0)
}

func convert(v any, gen uint64, depth int) (any, error) {
	if depth > maxConvertDepth {
		return nil, errorf(ErrInvalid, "value nested more than %d levels", maxConvertDepth)
	}
	switch x := v.(type) {
	case nil, bool:
		return x, nil
	case string:
		return newString(x), nil
	case json.Number:
		if x == "" { // encoding/json encodes the zero Number as 0
			return json.Number("0"), nil
		}
		if !validNumber(string(x)) {
			return nil, errorf(ErrInvalid, "invalid number %q", string(x))
		}
		return x, nil
	case map[string]any:
		if x == nil {
			return nil, nil
		}
		items := make([]member, 0, len(x))
		for k := range x {
			items = append(items, member{key: k})
		}
		slices.SortFunc(items, func(a, b member) int { return strings.Compare(a.key, b.key) })
		size := 1 + len(items) // braces and separators (n-1 commas)
		if len(items) == 0 {
			size = 2
		}
		for i := range items {
			cv, err := convert(x[items[i].key], gen, depth+1)
			if err != nil {
				return nil, err
			}
			items[i].val = cv
			size += stringSize(items[i].key) + 1 + sizeOf(cv)
		}
		o := &object{makeSeq(items, gen)}
		o.size = size
		return o, nil
	case []any:
		if x == nil {
			return nil, nil
		}
		items := make([]elem, len(x))
		size := 1 + len(items)
		if len(items) == 0 {
			size = 2
		}
		for i, e := range x {
			cv, err := convert(e, gen, depth+1)
			if err != nil {
				return nil, err
			}
			items[i].val = cv
			size += sizeOf(cv)
		}
		a := &array{makeSeq(items, gen)}
		a.size = size
		return a, nil
	}
	// Anything else (float64, int, structs, nil maps of other types, ...):
	// take encoding/json's view of it.
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, errorf(ErrInvalid, "value of type %T: %v", v, err)
	}
	plain, err := decodeJSON(raw)
	if err != nil {
		return nil, err
	}
	return convert(plain, gen, depth)
}

// decodeJSON decodes exactly one JSON value with json.Number numbers.
func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errorf(ErrInvalid, "malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf(ErrInvalid, "malformed JSON: data after the top-level value")
	}
	return v, nil
}

// toPlain converts an internal value into a freshly allocated decoded-JSON
// value.
func toPlain(v any) any {
	switch x := v.(type) {
	case *object:
		m := make(map[string]any, x.n)
		for _, ch := range x.chunks {
			for _, it := range ch.items {
				m[it.key] = toPlain(it.val)
			}
		}
		return m
	case *array:
		s := make([]any, 0, x.n)
		for _, ch := range x.chunks {
			for _, it := range ch.items {
				s = append(s, toPlain(it.val))
			}
		}
		return s
	case *longString:
		return x.s
	}
	return v
}

// plainDepth returns the nesting depth of a decoded JSON value, giving up
// (returning limit+1) as soon as it exceeds limit.
func plainDepth(v any, limit int) int {
	switch x := v.(type) {
	case map[string]any:
		if limit <= 0 {
			return 1
		}
		d := 0
		for _, e := range x {
			if d = max(d, plainDepth(e, limit-1)); d > limit-1 {
				break
			}
		}
		return d + 1
	case []any:
		if limit <= 0 {
			return 1
		}
		d := 0
		for _, e := range x {
			if d = max(d, plainDepth(e, limit-1)); d > limit-1 {
				break
			}
		}
		return d + 1
	}
	return 0
}

// appendValue appends the encoding/json encoding of an internal value.
func appendValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		if x {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case string:
		return appendString(dst, x)
	case *longString:
		return appendString(dst, x.s)
	case json.Number:
		if x == "" {
			return append(dst, '0')
		}
		return append(dst, x...)
	case *object:
		dst = append(dst, '{')
		first := true
		for _, ch := range x.chunks {
			for _, it := range ch.items {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				dst = appendString(dst, it.key)
				dst = append(dst, ':')
				dst = appendValue(dst, it.val)
			}
		}
		return append(dst, '}')
	case *array:
		dst = append(dst, '[')
		first := true
		for _, ch := range x.chunks {
			for _, it := range ch.items {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				dst = appendValue(dst, it.val)
			}
		}
		return append(dst, ']')
	}
	panic("jsonpatch: internal value of unexpected type")
}

// escapeLen[b] is the encoded length of ASCII byte b inside a JSON string
// as written by encoding/json with HTML escaping off (json.Encoder with
// SetEscapeHTML(false), as protocol.Encode writes frames): what the size
// limits measure is what is sent.
var escapeLen = func() (t [utf8.RuneSelf]uint8) {
	for b := range t {
		switch {
		case b == '\\' || b == '"' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
			t[b] = 2
		case b < 0x20:
			t[b] = 6
		default:
			t[b] = 1
		}
	}
	return t
}()

// stringSize returns len(appendString(nil, s)) without allocating.
func stringSize(s string) int {
	n := 2
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			n += int(escapeLen[b])
			i++
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 || c == '\u2028' || c == '\u2029' {
			n += 6
		} else {
			n += size
		}
		i += size
	}
	return n
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, byte for byte as a json.Encoder
// with SetEscapeHTML(false) encodes it (<, >, & kept; U+2028, U+2029 and
// control characters escaped; invalid UTF-8 as U+FFFD). Other
// packages use it to build frames without a reflection-based Marshal.
func AppendString(dst []byte, s string) []byte { return appendString(dst, s) }

// appendString mirrors encoding/json's string encoding without HTML
// escaping.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if escapeLen[b] == 1 {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// validNumber reports whether s is a JSON number literal.
func validNumber(s string) bool {
	_, _, _, _, ok := splitNumber(s)
	return ok
}

// splitNumber splits a JSON number literal into its sign, integer digits,
// fraction digits and exponent (with optional sign; "" if absent).
func splitNumber(s string) (neg bool, intPart, frac, exp string, ok bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	j := i
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	if j == i || s[i] == '0' && j-i > 1 {
		return
	}
	intPart = s[i:j]
	if j < len(s) && s[j] == '.' {
		k := j + 1
		for k < len(s) && isDigit(s[k]) {
			k++
		}
		if k == j+1 {
			return
		}
		frac = s[j+1 : k]
		j = k
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		d := k
		for k < len(s) && isDigit(s[k]) {
			k++
		}
		if k == d {
			return
		}
		exp = s[j+1 : k]
		j = k
	}
	return neg, intPart, frac, exp, j == len(s)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// decimal is an exact normalised number: digits × 10^exp, where digits has
// no leading or trailing zeros ("" for zero, whose sign is ignored) and the
// exponent is kept as a sign and a decimal string without leading zeros, so
// that absurd exponents cost linear time (math/big parsing is quadratic).
type decimal struct {
	neg       bool
	digits    string
	expNeg    bool
	expDigits string // "" for 0
}

const e18 = 1_000_000_000_000_000_000

func parseDecimal(s string) (decimal, bool) {
	neg, intPart, frac, exp, ok := splitNumber(s)
	if !ok {
		return decimal{}, false
	}
	mant := strings.TrimLeft(intPart+frac, "0")
	if mant == "" {
		return decimal{}, true
	}
	d := decimal{neg: neg, digits: strings.TrimRight(mant, "0")}
	// value = digits × 10^(exp + adj)
	adj := int64(len(mant)-len(d.digits)) - int64(len(frac))
	expNeg := false
	if exp != "" && (exp[0] == '+' || exp[0] == '-') {
		expNeg = exp[0] == '-'
		exp = exp[1:]
	}
	d.expNeg, d.expDigits = addSmall(expNeg, strings.TrimLeft(exp, "0"), adj)
	return d, true
}

// addSmall returns (-1)^neg × mag + adj as a sign and magnitude digits
// (without leading zeros, "" for zero). |adj| must be below 10^18.
func addSmall(neg bool, mag string, adj int64) (bool, string) {
	if len(mag) <= 18 {
		v, _ := strconv.ParseInt("0"+mag, 10, 64)
		if neg {
			v = -v
		}
		v += adj
		if v == 0 {
			return false, ""
		}
		if v < 0 {
			return true, strconv.FormatInt(-v, 10)
		}
		return false, strconv.FormatInt(v, 10)
	}
	// |mag| >= 10^18 > |adj|: the sign is neg's, and the magnitude moves by
	// -adj or +adj. Work on the last 18 digits with a carry into the head.
	if neg {
		adj = -adj
	}
	head, tail := mag[:len(mag)-18], mag[len(mag)-18:]
	t, _ := strconv.ParseInt(tail, 10, 64)
	t += adj
	b := []byte(head)
	switch {
	case t >= e18:
		t -= e18
		i := len(b) - 1
		for ; i >= 0 && b[i] == '9'; i-- {
			b[i] = '0'
		}
		if i < 0 {
			b = append([]byte{'1'}, b...)
		} else {
			b[i]++
		}
	case t < 0:
		t += e18
		i := len(b) - 1
		for ; b[i] == '0'; i-- { // head >= 1, so a non-zero digit exists
			b[i] = '9'
		}
		b[i]--
	}
	out := strings.TrimLeft(string(b)+fmt.Sprintf("%018d", t), "0")
	return neg, out
}

// numEqual compares two JSON numbers by exact value (1 == 1.0 == 1e0 == 10e-1,
// -0 == 0), without float rounding and in linear time.
func numEqual(a, b json.Number) bool {
	if a == b {
		return true
	}
	if a == "" {
		a = "0"
	}
	if b == "" {
		b = "0"
	}
	da, ok1 := parseDecimal(string(a))
	db, ok2 := parseDecimal(string(b))
	return ok1 && ok2 && da == db
}

// equal reports JSON value equality of two internal values.
func equal(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case *longString:
		y, ok := b.(*longString)
		return ok && (x == y || x.s == y.s)
	case json.Number:
		y, ok := b.(json.Number)
		return ok && numEqual(x, y)
	case *object:
		y, ok := b.(*object)
		if !ok || x.n != y.n {
			return false
		}
		if x == y {
			return true
		}
		cx, cy := cursor[member]{s: &x.seq}, cursor[member]{s: &y.seq}
		for range x.n {
			mx, my := cx.next(), cy.next()
			if mx.key != my.key || !equal(mx.val, my.val) {
				return false
			}
		}
		return true
	case *array:
		y, ok := b.(*array)
		if !ok || x.n != y.n {
			return false
		}
		if x == y {
			return true
		}
		cx, cy := cursor[elem]{s: &x.seq}, cursor[elem]{s: &y.seq}
		for range x.n {
			if !equal(cx.next().val, cy.next().val) {
				return false
			}
		}
		return true
	}
	return false
}

type cursor[E entry[E]] struct {
	s       *seq[E]
	ci, off int
}

func (c *cursor[E]) next() E {
	for c.off == len(c.s.chunks[c.ci].items) {
		c.ci++
		c.off = 0
	}
	e := c.s.chunks[c.ci].items[c.off]
	c.off++
	return e
}

// hex4 decodes the four hex digits at raw[i:i+4].
func hex4(raw []byte, i int) (uint16, bool) {
	if i+4 > len(raw) {
		return 0, false
	}
	var c uint16
	for _, b := range raw[i : i+4] {
		switch {
		case '0' <= b && b <= '9':
			b -= '0'
		case 'a' <= b && b <= 'f':
			b -= 'a' - 10
		case 'A' <= b && b <= 'F':
			b -= 'A' - 10
		default:
			return 0, false
		}
		c = c<<4 | uint16(b)
	}
	return c, true
}
