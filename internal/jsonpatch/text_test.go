package jsonpatch

import (
	"errors"
	"testing"
)

func TestCheckText(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`[{"op":"add","path":"/a","value":"plain"}]`, true},
		{`"\ud83d\ude00"`, true},  // a pair
		{`"\uD83D\uDE00"`, true},  // a pair, upper case
		{`"\\ud800"`, true},       // an escaped backslash, then text
		{`"\u00e9\n\"\/"`, true},  // other escapes
		{`"é😀"`, true},            // raw UTF-8
		{`"\ud800"`, false},       // lone high
		{`"\udc00"`, false},       // lone low
		{`"\ud800x"`, false},      // high then text
		{`"\ud800\u0041"`, false}, // high then a non-surrogate escape
		{`"\ud800\ud800"`, false}, // high then high
		{`"\\\ud800"`, false},     // escaped backslash, then a lone high
		{"\"\xff\"", false},       // invalid UTF-8
		{"\"\xed\xa0\x80\"", false},
	} {
		err := CheckText([]byte(tc.in))
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckText(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
	// ParseOps refuses them only when asked to.
	raw := []byte(`[{"op":"add","path":"/a","value":"\ud800"}]`)
	if _, err := ParseOps(raw, Limits{}); err != nil {
		t.Fatalf("lenient ParseOps: %v", err)
	}
	if _, err := ParseOps(raw, Limits{RejectInvalidText: true}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("strict ParseOps: %v, want ErrInvalid", err)
	}
}
