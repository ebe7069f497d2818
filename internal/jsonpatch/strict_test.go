package jsonpatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

var strictLimits = Limits{MaxOps: 32, MaxDepth: 12, MaxBytes: 4096, RejectInvalidText: true, RejectDuplicateNames: true}

// dupCases are patches with (dup) and without a duplicate member name.
var dupCases = []struct {
	patch string
	dup   bool
}{
	{`[{"op":"add","path":"/d","value":{"a":1,"b":2}}]`, false},
	{`[{"op":"add","path":"/d","value":{"a":1,"a":2}}]`, true},
	{`[{"op":"add","path":"/e","value":"x","value":"y"}]`, true},
	{`[{"op":"add","op":"remove","path":"/a","value":1}]`, true},
	{`[{"op":"add","path":"/a","path":"/a","value":1}]`, true},
	{`[{"op":"remove","path":"/a","x":1,"x":1}]`, true},                     // an ignored member
	{`[{"op":"add","path":"/a","value":{"a":1,"\u0061":2}}]`, true},         // same name once unescaped
	{`[{"op":"add","path":"/a","value":{"\u00e9":1,"é":2}}]`, true},         // escaped vs raw UTF-8
	{`[{"op":"add","path":"/a","value":{"\ud83d\ude00":1,"😀":2}}]`, true},   // a pair vs raw UTF-8
	{`[{"op":"add","path":"/a","value":{"a":1,"A":2,"a ":3,"":4}}]`, false}, // near misses
	{`[{"op":"add","path":"/a","value":[{"k":1},{"k":2}]}]`, false},         // same name, different objects
	{`[{"op":"add","path":"/a","value":[{"k":1},{"k":2,"k":3}]}]`, true},
	{`[{"op":"add","path":"/a","value":{"x":{"y":{"z":[1,{"q":0,"q":0}]}}}}]`, true}, // deep, equal values
	{`[{"op":"add","path":"/a","value":"a:b:c"},{"op":"add","path":"/b","value":{":":"::"}}]`, false},
	{`[{"op":"add","path":"/a","value":"\":\""},{"op":"test","path":"/b","value":{"\"":1,"\\":2}}]`, false},
	{`[{"op":"add","path":"/a","value":1},{"op":"copy","from":"/a","path":"/b","from":"/a"}]`, true},
	{`[{"op":"add","path":"/a","value":{}},{"op":"add","path":"/b","value":{"a":{},"b":{}}}]`, false},
}

func TestRejectDuplicateNames(t *testing.T) {
	for _, tc := range dupCases {
		if hasDuplicateNames(t, []byte(tc.patch)) != tc.dup {
			t.Fatalf("reference disagrees with the case %s", tc.patch)
		}
		_, err := ParseOps([]byte(tc.patch), strictLimits)
		if tc.dup != (err != nil) || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseOps(%s) = %v, want duplicate=%v", tc.patch, err, tc.dup)
		}
		if err != nil && !strings.Contains(err.Error(), "same name") {
			t.Errorf("ParseOps(%s): error %q does not name the problem", tc.patch, err)
		}
		// Lenient parsing (replay of stored batches) still accepts them.
		if _, err := ParseOps([]byte(tc.patch), Limits{}); err != nil {
			t.Errorf("lenient ParseOps(%s) = %v", tc.patch, err)
		}
		// Each op's value on its own.
		for _, op := range splitValues(t, tc.patch) {
			if err := CheckUniqueNames(op); (err != nil) != hasDuplicateNames(t, op) {
				t.Errorf("CheckUniqueNames(%s) = %v", op, err)
			}
		}
	}
	// The error names the operation.
	_, err := ParseOps([]byte(`[{"op":"add","path":"/a","value":1},{"op":"add","path":"/b","value":{"a":1,"a":2}}]`), strictLimits)
	if err == nil || !strings.Contains(err.Error(), "op 1 ") {
		t.Errorf("error %v does not name op 1", err)
	}
	for _, s := range []string{`1`, `"x"`, `null`, `{}`, `[]`, `{"a":{"a":{"a":1}}}`, `[{"a":1},{"a":1}]`} {
		if err := CheckUniqueNames([]byte(s)); err != nil {
			t.Errorf("CheckUniqueNames(%s) = %v", s, err)
		}
	}
	for _, s := range []string{`{"a":1,"a":1}`, `[{"a":1,"b":{"c":1,"c":2}}]`, `{"a":`, ``} {
		if err := CheckUniqueNames([]byte(s)); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckUniqueNames(%s) = %v, want ErrInvalid", s, err)
		}
	}
}

// splitValues returns the raw operations of a patch.
func splitValues(t *testing.T, patch string) [][]byte {
	var ops []json.RawMessage
	if err := json.Unmarshal([]byte(patch), &ops); err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(ops))
	for i, op := range ops {
		out[i] = op
	}
	return out
}

// hasDuplicateNames is the reference: a token walk keeping the set of
// names of every open object.
func hasDuplicateNames(t testing.TB, raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		obj   bool
		names map[string]bool
		key   bool // the next token of this object is a name
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		if err != nil {
			t.Fatalf("reference: %v", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			name := tok.(string)
			if top.names[name] {
				return true
			}
			top.names[name] = true
			top.key = false
			continue
		}
		if top != nil && top.obj {
			top.key = true // this token is a value
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, names: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// FuzzParseOpsStrict checks that CheckText agrees with the check it
// replaced, and that strict parsing refuses exactly the
// patches the reference finds a duplicate name in (among those that are
// otherwise valid), and that a patch it accepts means the same to a
// decoder that keeps the first of duplicate names as to one that keeps
// the last (there are none).
//
//	go test -run '^$' -fuzz '^FuzzParseOpsStrict$' -fuzztime 10s ./internal/jsonpatch
func FuzzParseOpsStrict(f *testing.F) {
	for _, tc := range dupCases {
		f.Add([]byte(tc.patch))
	}
	for _, tc := range patchCases {
		f.Add([]byte(tc.patch))
	}
	f.Add([]byte(`[{"op":"add","path":"/a","value":"\ud800"}]`))
	f.Add([]byte(`[{"op":"add","path":"/a","value":{"\ud800":1,"\ud801":2}}]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		// The one-pass scan agrees with the text check it replaced on
		// every well-formed JSON text.
		if json.Valid(raw) && (CheckText(raw) == nil) != (checkTextBefore(raw) == nil) {
			t.Fatalf("CheckText = %v, the previous check = %v", CheckText(raw), checkTextBefore(raw))
		}
		lax := strictLimits
		lax.RejectDuplicateNames = false
		_, laxErr := ParseOps(raw, lax)
		_, err := ParseOps(raw, strictLimits)
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unexpected error %v", err)
		}
		if laxErr != nil {
			if err == nil {
				t.Fatalf("strict accepted what lax refused: %v", laxErr)
			}
			return
		}
		if dup := hasDuplicateNames(t, raw); dup != (err != nil) {
			t.Fatalf("duplicate=%v but strict ParseOps = %v", dup, err)
		}
	})
}
