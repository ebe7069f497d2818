package jsonpatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
)

// patchCase is one table case: apply patch to doc, expect want (a JSON
// document) or an error wrapping err.
type patchCase struct {
	name  string
	doc   string
	patch string
	want  string // expected result, when err == nil
	err   error  // expected sentinel
}

var patchCases = []patchCase{
	// RFC 6902 Appendix A.
	{name: "A.1 add object member", doc: `{"foo":"bar"}`,
		patch: `[{"op":"add","path":"/baz","value":"qux"}]`,
		want:  `{"baz":"qux","foo":"bar"}`},
	{name: "A.2 add array element", doc: `{"foo":["bar","baz"]}`,
		patch: `[{"op":"add","path":"/foo/1","value":"qux"}]`,
		want:  `{"foo":["bar","qux","baz"]}`},
	{name: "A.3 remove object member", doc: `{"baz":"qux","foo":"bar"}`,
		patch: `[{"op":"remove","path":"/baz"}]`,
		want:  `{"foo":"bar"}`},
	{name: "A.4 remove array element", doc: `{"foo":["bar","qux","baz"]}`,
		patch: `[{"op":"remove","path":"/foo/1"}]`,
		want:  `{"foo":["bar","baz"]}`},
	{name: "A.5 replace value", doc: `{"baz":"qux","foo":"bar"}`,
		patch: `[{"op":"replace","path":"/baz","value":"boo"}]`,
		want:  `{"baz":"boo","foo":"bar"}`},
	{name: "A.6 move value", doc: `{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}`,
		patch: `[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]`,
		want:  `{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}`},
	{name: "A.7 move array element", doc: `{"foo":["all","grass","cows","eat"]}`,
		patch: `[{"op":"move","from":"/foo/1","path":"/foo/3"}]`,
		want:  `{"foo":["all","cows","eat","grass"]}`},
	{name: "A.8 test success", doc: `{"baz":"qux","foo":["a",2,"c"]}`,
		patch: `[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]`,
		want:  `{"baz":"qux","foo":["a",2,"c"]}`},
	{name: "A.9 test error", doc: `{"baz":"qux"}`,
		patch: `[{"op":"test","path":"/baz","value":"bar"}]`,
		err:   ErrTestFailed},
	{name: "A.10 add nested member object", doc: `{"foo":"bar"}`,
		patch: `[{"op":"add","path":"/child","value":{"grandchild":{}}}]`,
		want:  `{"foo":"bar","child":{"grandchild":{}}}`},
	{name: "A.11 ignore unrecognized elements", doc: `{"foo":"bar"}`,
		patch: `[{"op":"add","path":"/baz","value":"qux","xyz":123}]`,
		want:  `{"foo":"bar","baz":"qux"}`},
	{name: "A.12 add to nonexistent target", doc: `{"foo":"bar"}`,
		patch: `[{"op":"add","path":"/baz/bat","value":"qux"}]`,
		err:   ErrInvalid},
	{name: "A.13 duplicate op member", doc: `{"foo":"bar"}`,
		patch: `[{"op":"add","path":"/baz","value":"qux","op":"remove"}]`,
		err:   ErrInvalid},
	{name: "A.14 escape ordering", doc: `{"/":9,"~1":10}`,
		patch: `[{"op":"test","path":"/~01","value":10}]`,
		want:  `{"/":9,"~1":10}`},
	{name: "A.15 string is not number", doc: `{"/":9,"~1":10}`,
		patch: `[{"op":"test","path":"/~01","value":"10"}]`,
		err:   ErrTestFailed},
	{name: "A.16 add array value", doc: `{"foo":["bar"]}`,
		patch: `[{"op":"add","path":"/foo/-","value":["abc","def"]}]`,
		want:  `{"foo":["bar",["abc","def"]]}`},

	// RFC 6901 escapes.
	{name: "escape ~1 is slash", doc: `{"a/b":1}`,
		patch: `[{"op":"replace","path":"/a~1b","value":2}]`, want: `{"a/b":2}`},
	{name: "escape ~0 is tilde", doc: `{"m~n":1}`,
		patch: `[{"op":"remove","path":"/m~0n"}]`, want: `{}`},
	{name: "escape ~0~1 mix", doc: `{}`,
		patch: `[{"op":"add","path":"/~0~1~1~0","value":true}]`, want: `{"~//~":true}`},
	{name: "escape unknown ~2", doc: `{"a":1}`,
		patch: `[{"op":"add","path":"/a~2","value":1}]`, err: ErrInvalid},
	{name: "escape dangling ~", doc: `{"a":1}`,
		patch: `[{"op":"add","path":"/a~","value":1}]`, err: ErrInvalid},
	{name: "pointer without slash", doc: `{"a":1}`,
		patch: `[{"op":"remove","path":"a"}]`, err: ErrInvalid},
	{name: "empty key", doc: `{"":1}`,
		patch: `[{"op":"replace","path":"/","value":2}]`, want: `{"":2}`},
	{name: "nested empty keys", doc: `{"":{"":[]}}`,
		patch: `[{"op":"add","path":"//","value":[0]},{"op":"add","path":"///0","value":1}]`,
		want:  `{"":{"":[1,0]}}`},

	// add.
	{name: "add replaces existing member", doc: `{"a":{"deep":[1,2,3]},"b":2}`,
		patch: `[{"op":"add","path":"/a","value":"x"}]`, want: `{"a":"x","b":2}`},
	{name: "add append with dash", doc: `{"a":[1,2]}`,
		patch: `[{"op":"add","path":"/a/-","value":3},{"op":"add","path":"/a/-","value":{"x":null}}]`,
		want:  `{"a":[1,2,3,{"x":null}]}`},
	{name: "add at index len", doc: `{"a":[1,2]}`,
		patch: `[{"op":"add","path":"/a/2","value":3}]`, want: `{"a":[1,2,3]}`},
	{name: "add at index 0 of empty", doc: `{"a":[]}`,
		patch: `[{"op":"add","path":"/a/0","value":"x"}]`, want: `{"a":["x"]}`},
	{name: "add past end", doc: `{"a":[1,2]}`,
		patch: `[{"op":"add","path":"/a/3","value":3}]`, err: ErrInvalid},
	{name: "add leading zero index", doc: `{"a":[1,2]}`,
		patch: `[{"op":"add","path":"/a/01","value":3}]`, err: ErrInvalid},
	{name: "add negative index", doc: `{"a":[1,2]}`,
		patch: `[{"op":"add","path":"/a/-1","value":3}]`, err: ErrInvalid},
	{name: "add plus index", doc: `{"a":[1,2]}`,
		patch: `[{"op":"add","path":"/a/+1","value":3}]`, err: ErrInvalid},
	{name: "add huge index", doc: `{"a":[1,2]}`,
		patch: `[{"op":"add","path":"/a/99999999999999999999999","value":3}]`, err: ErrInvalid},
	{name: "add dash is a key in objects", doc: `{"a":{}}`,
		patch: `[{"op":"add","path":"/a/-","value":1}]`, want: `{"a":{"-":1}}`},
	{name: "add into scalar", doc: `{"a":"str"}`,
		patch: `[{"op":"add","path":"/a/b","value":1}]`, err: ErrInvalid},
	{name: "add into null", doc: `{"a":null}`,
		patch: `[{"op":"add","path":"/a/b","value":1}]`, err: ErrInvalid},
	{name: "add whole document", doc: `{"a":1}`,
		patch: `[{"op":"add","path":"","value":{"b":[2]}}]`, want: `{"b":[2]}`},
	{name: "add whole document non-object", doc: `{"a":1}`,
		patch: `[{"op":"add","path":"","value":[1]}]`, err: ErrInvalid},
	{name: "add missing value", doc: `{}`,
		patch: `[{"op":"add","path":"/a"}]`, err: ErrInvalid},
	{name: "add null value", doc: `{}`,
		patch: `[{"op":"add","path":"/a","value":null}]`, want: `{"a":null}`},
	{name: "add then modify added value", doc: `{}`,
		patch: `[{"op":"add","path":"/a","value":{"b":[]}},{"op":"add","path":"/a/b/-","value":1},{"op":"add","path":"/a/c","value":2}]`,
		want:  `{"a":{"b":[1],"c":2}}`},

	// remove.
	{name: "remove missing member", doc: `{"a":1}`,
		patch: `[{"op":"remove","path":"/b"}]`, err: ErrInvalid},
	{name: "remove out of range", doc: `{"a":[1]}`,
		patch: `[{"op":"remove","path":"/a/1"}]`, err: ErrInvalid},
	{name: "remove dash", doc: `{"a":[1]}`,
		patch: `[{"op":"remove","path":"/a/-"}]`, err: ErrInvalid},
	{name: "remove root", doc: `{"a":1}`,
		patch: `[{"op":"remove","path":""}]`, err: ErrInvalid},
	{name: "remove last element", doc: `{"a":[1,2,3]}`,
		patch: `[{"op":"remove","path":"/a/2"},{"op":"remove","path":"/a/0"}]`, want: `{"a":[2]}`},
	{name: "remove only member", doc: `{"a":{"b":1}}`,
		patch: `[{"op":"remove","path":"/a/b"}]`, want: `{"a":{}}`},

	// replace.
	{name: "replace missing member", doc: `{"a":1}`,
		patch: `[{"op":"replace","path":"/b","value":1}]`, err: ErrInvalid},
	{name: "replace array element", doc: `{"a":[1,2]}`,
		patch: `[{"op":"replace","path":"/a/1","value":[3]}]`, want: `{"a":[1,[3]]}`},
	{name: "replace index len", doc: `{"a":[1,2]}`,
		patch: `[{"op":"replace","path":"/a/2","value":3}]`, err: ErrInvalid},
	{name: "replace dash", doc: `{"a":[1,2]}`,
		patch: `[{"op":"replace","path":"/a/-","value":3}]`, err: ErrInvalid},
	{name: "replace root", doc: `{"a":1}`,
		patch: `[{"op":"replace","path":"","value":{}}]`, want: `{}`},
	{name: "replace root with string", doc: `{"a":1}`,
		patch: `[{"op":"replace","path":"","value":"x"}]`, err: ErrInvalid},
	{name: "replace missing value", doc: `{"a":1}`,
		patch: `[{"op":"replace","path":"/a"}]`, err: ErrInvalid},

	// move.
	{name: "move to same path", doc: `{"a":{"b":1}}`,
		patch: `[{"op":"move","from":"/a","path":"/a"}]`, want: `{"a":{"b":1}}`},
	{name: "move same path missing", doc: `{"a":1}`,
		patch: `[{"op":"move","from":"/b","path":"/b"}]`, err: ErrInvalid},
	{name: "move into own child", doc: `{"a":{"b":1}}`,
		patch: `[{"op":"move","from":"/a","path":"/a/c"}]`, err: ErrInvalid},
	{name: "move root into child", doc: `{"a":{"b":1}}`,
		patch: `[{"op":"move","from":"","path":"/x"}]`, err: ErrInvalid},
	{name: "move to sibling with prefix name", doc: `{"a":1}`,
		patch: `[{"op":"move","from":"/a","path":"/ab"}]`, want: `{"ab":1}`},
	{name: "move missing from", doc: `{"a":1}`,
		patch: `[{"op":"move","from":"/x","path":"/y"}]`, err: ErrInvalid},
	{name: "move without from", doc: `{"a":1}`,
		patch: `[{"op":"move","path":"/y"}]`, err: ErrInvalid},
	{name: "move member over existing", doc: `{"a":[1],"b":{"c":2}}`,
		patch: `[{"op":"move","from":"/b","path":"/a"}]`, want: `{"a":{"c":2}}`},
	{name: "move child to root", doc: `{"a":{"b":1},"c":2}`,
		patch: `[{"op":"move","from":"/a","path":""}]`, want: `{"b":1}`},
	{name: "move array elem to end", doc: `{"a":[1,2,3]}`,
		patch: `[{"op":"move","from":"/a/0","path":"/a/-"}]`, want: `{"a":[2,3,1]}`},
	{name: "move index checked after removal", doc: `{"a":[1,2]}`,
		patch: `[{"op":"move","from":"/a/0","path":"/a/2"}]`, err: ErrInvalid},
	{name: "move between containers then edit", doc: `{"a":{"x":{"y":1}},"b":[]}`,
		patch: `[{"op":"move","from":"/a/x","path":"/b/0"},{"op":"add","path":"/b/0/z","value":2}]`,
		want:  `{"a":{},"b":[{"y":1,"z":2}]}`},

	// copy.
	{name: "copy member", doc: `{"a":{"b":[1]}}`,
		patch: `[{"op":"copy","from":"/a","path":"/c"}]`, want: `{"a":{"b":[1]},"c":{"b":[1]}}`},
	{name: "copy then modify copy only", doc: `{"a":{"b":[1]}}`,
		patch: `[{"op":"copy","from":"/a","path":"/c"},{"op":"add","path":"/c/b/-","value":2}]`,
		want:  `{"a":{"b":[1]},"c":{"b":[1,2]}}`},
	{name: "copy of value created in batch then modify", doc: `{}`,
		patch: `[{"op":"add","path":"/a","value":{"b":[1]}},{"op":"copy","from":"/a","path":"/c"},{"op":"add","path":"/a/b/-","value":2},{"op":"add","path":"/c/d","value":3}]`,
		want:  `{"a":{"b":[1,2]},"c":{"b":[1],"d":3}}`},
	{name: "copy root into child", doc: `{"a":1}`,
		patch: `[{"op":"copy","from":"","path":"/r"},{"op":"copy","from":"","path":"/r/r"}]`,
		want:  `{"a":1,"r":{"a":1,"r":{"a":1,"r":{"a":1}}}}`},
	{name: "copy into own child", doc: `{"a":{"b":1}}`,
		patch: `[{"op":"copy","from":"/a","path":"/a/c"}]`, want: `{"a":{"b":1,"c":{"b":1}}}`},
	{name: "copy array element", doc: `{"a":[1,[2]]}`,
		patch: `[{"op":"copy","from":"/a/1","path":"/a/0"},{"op":"add","path":"/a/0/-","value":3}]`,
		want:  `{"a":[[2,3],1,[2]]}`},
	{name: "copy missing from", doc: `{"a":1}`,
		patch: `[{"op":"copy","from":"/b","path":"/c"}]`, err: ErrInvalid},
	{name: "copy from dash", doc: `{"a":[1]}`,
		patch: `[{"op":"copy","from":"/a/-","path":"/c"}]`, err: ErrInvalid},

	// test.
	{name: "test numbers by value", doc: `{"a":1,"b":1.0,"c":-0,"d":1e10,"e":0.1}`,
		patch: `[{"op":"test","path":"/a","value":1.0},{"op":"test","path":"/a","value":1e0},{"op":"test","path":"/a","value":10E-1},
			{"op":"test","path":"/b","value":1},{"op":"test","path":"/c","value":0},{"op":"test","path":"/c","value":0.0e5},
			{"op":"test","path":"/d","value":10000000000},{"op":"test","path":"/e","value":1e-1}]`,
		want: `{"a":1,"b":1.0,"c":-0,"d":1e10,"e":0.1}`},
	{name: "test number precision", doc: `{"a":9007199254740993}`,
		patch: `[{"op":"test","path":"/a","value":9007199254740992}]`, err: ErrTestFailed},
	{name: "test tiny difference", doc: `{"a":0.10000000000000000000000000001}`,
		patch: `[{"op":"test","path":"/a","value":0.1}]`, err: ErrTestFailed},
	{name: "test objects unordered", doc: `{"a":{"x":1,"y":[1,2]}}`,
		patch: `[{"op":"test","path":"/a","value":{"y":[1,2],"x":1}}]`, want: `{"a":{"x":1,"y":[1,2]}}`},
	{name: "test arrays ordered", doc: `{"a":[1,2]}`,
		patch: `[{"op":"test","path":"/a","value":[2,1]}]`, err: ErrTestFailed},
	{name: "test object extra member", doc: `{"a":{"x":1}}`,
		patch: `[{"op":"test","path":"/a","value":{"x":1,"y":null}}]`, err: ErrTestFailed},
	{name: "test null", doc: `{"a":null}`,
		patch: `[{"op":"test","path":"/a","value":null}]`, want: `{"a":null}`},
	{name: "test null vs false", doc: `{"a":null}`,
		patch: `[{"op":"test","path":"/a","value":false}]`, err: ErrTestFailed},
	{name: "test whole document", doc: `{"a":[true]}`,
		patch: `[{"op":"test","path":"","value":{"a":[true]}}]`, want: `{"a":[true]}`},
	{name: "test missing path", doc: `{"a":1}`,
		patch: `[{"op":"test","path":"/b","value":1}]`, err: ErrInvalid},
	{name: "test through scalar", doc: `{"a":"str"}`,
		patch: `[{"op":"test","path":"/a/0","value":"s"}]`, err: ErrInvalid},
	{name: "copy from through number", doc: `{"a":1}`,
		patch: `[{"op":"copy","from":"/a/b","path":"/c"}]`, err: ErrInvalid},
	{name: "test missing value", doc: `{"a":1}`,
		patch: `[{"op":"test","path":"/a"}]`, err: ErrInvalid},
	{name: "test after add", doc: `{}`,
		patch: `[{"op":"add","path":"/a","value":"x"},{"op":"test","path":"/a","value":"x"}]`, want: `{"a":"x"}`},

	// Malformed patches.
	{name: "unknown op", doc: `{}`, patch: `[{"op":"merge","path":"/a","value":1}]`, err: ErrInvalid},
	{name: "op not string", doc: `{}`, patch: `[{"op":1,"path":"/a","value":1}]`, err: ErrInvalid},
	{name: "missing op", doc: `{}`, patch: `[{"path":"/a","value":1}]`, err: ErrInvalid},
	{name: "missing path", doc: `{}`, patch: `[{"op":"add","value":1}]`, err: ErrInvalid},
	{name: "null path", doc: `{}`, patch: `[{"op":"add","path":null,"value":1}]`, err: ErrInvalid},
	{name: "from not string", doc: `{"a":1}`, patch: `[{"op":"copy","from":1,"path":"/b"}]`, err: ErrInvalid},
	{name: "patch not array", doc: `{}`, patch: `{"op":"add","path":"/a","value":1}`, err: ErrInvalid},
	{name: "op not object", doc: `{}`, patch: `["add"]`, err: ErrInvalid},
	{name: "trailing data", doc: `{}`, patch: `[] []`, err: ErrInvalid},
	{name: "truncated", doc: `{}`, patch: `[{"op":"add","path":"/a","value":1}`, err: ErrInvalid},
	{name: "missing comma", doc: `{}`, patch: `[{"op":"add","path":"/a","value":1} {"op":"add","path":"/b","value":1}]`, err: ErrInvalid},
	{name: "empty patch", doc: `{"a":1}`, patch: `[]`, want: `{"a":1}`},

	// Encoding-sensitive values.
	{name: "escaped strings", doc: `{}`,
		patch: `[{"op":"add","path":"/<k&>","value":"<a href=\"x\">&amp;</a>\u0000\u001f\b\f\n\r\t\\ \u2028\u2029 é 日本 😀 \u007f"}]`,
		want:  `{"<k&>":"<a href=\"x\">&amp;</a>\u0000\u001f\b\f\n\r\t\\ \u2028\u2029 é 日本 😀 \u007f"}`},
	{name: "long strings", doc: `{"s":"<long & \"quoted\" \u0001 string \u2028 é><long & \"quoted\" \u0001 string \u2028 é><long & \"quoted\" \u0001 string \u2028 é>","a":[]}`,
		patch: `[{"op":"move","from":"/s","path":"/t"},{"op":"copy","from":"/t","path":"/a/-"},{"op":"test","path":"/a/0","value":"<long & \"quoted\" \u0001 string \u2028 é><long & \"quoted\" \u0001 string \u2028 é><long & \"quoted\" \u0001 string \u2028 é>"},
			{"op":"remove","path":"/t"},{"op":"add","path":"/u","value":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"},{"op":"replace","path":"/a/0","value":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"},
			{"op":"test","path":"/a/0","value":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"},{"op":"copy","from":"/u","path":"/yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}]`,
		want: `{"a":["yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"],"u":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy","yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}`},
	{name: "long string test mismatch", doc: `{"s":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}`,
		patch: `[{"op":"test","path":"/s","value":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyz"}]`, err: ErrTestFailed},
	{name: "numbers verbatim", doc: `{}`,
		patch: `[{"op":"add","path":"/n","value":[1.0,-0,1e10,1E+2,0.5e-3,-12.340,123456789012345678901234567890]}]`,
		want:  `{"n":[1.0,-0,1e10,1E+2,0.5e-3,-12.340,123456789012345678901234567890]}`},
}

// decodeStd decodes s with encoding/json (UseNumber).
func decodeStd(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return v
}

func mustDoc(t testing.TB, s string) Doc {
	t.Helper()
	d, err := NewDoc([]byte(s), Limits{})
	if err != nil {
		t.Fatalf("NewDoc(%s): %v", s, err)
	}
	checkDoc(t, d)
	return d
}

// mustMarshal encodes v as frames are encoded (protocol.Encode): compact,
// without HTML escaping.
func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("json encode: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// checkDoc verifies the size invariant, that MarshalJSON matches
// encoding/json byte for byte, and the internal structure.
func checkDoc(t testing.TB, d Doc) {
	t.Helper()
	got, err := d.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	std := mustMarshal(t, d.Value())
	if !bytes.Equal(got, std) {
		t.Fatalf("MarshalJSON differs from encoding/json:\n got %s\nwant %s", got, std)
	}
	if d.Size() != len(std) {
		t.Fatalf("Size() = %d, len(json.Marshal(Value())) = %d (%s)", d.Size(), len(std), std)
	}
	if via := mustMarshal(t, d); !bytes.Equal(via, std) {
		t.Fatalf("json.Marshal(Doc) = %s, want %s", via, std)
	}
	if d.root != nil {
		if err := verifyNode(d.root); err != nil {
			t.Fatalf("internal structure: %v\n%s", err, std)
		}
	}
}

// verifyNode recomputes sizes and depths and checks chunk invariants.
func verifyNode(v any) error {
	_, _, err := verify(v)
	return err
}

func verify(v any) (size, depth int, err error) {
	switch x := v.(type) {
	case *object:
		size, depth, err = verifySeq(&x.seq, func(m member) any { return m.val })
		if err != nil {
			return
		}
		prev, first := "", true
		for _, ch := range x.chunks {
			for _, it := range ch.items {
				if !first && it.key <= prev {
					return 0, 0, fmt.Errorf("keys out of order: %q after %q", it.key, prev)
				}
				prev, first = it.key, false
				size += stringSize(it.key) + 1
			}
		}
		if size != x.size {
			return 0, 0, fmt.Errorf("object cached size %d, computed %d", x.size, size)
		}
		return size, depth, nil
	case *array:
		size, depth, err = verifySeq(&x.seq, func(e elem) any { return e.val })
		if err == nil && size != x.size {
			err = fmt.Errorf("array cached size %d, computed %d", x.size, size)
		}
		return size, depth, err
	case nil, bool:
		return sizeOf(v), 0, nil
	case string:
		if len(x) >= longStringLen {
			return 0, 0, fmt.Errorf("long string stored plain")
		}
		return sizeOf(v), 0, nil
	case *longString:
		if len(x.s) < longStringLen || x.size != stringSize(x.s) {
			return 0, 0, fmt.Errorf("bad longString %d %d", len(x.s), x.size)
		}
		return x.size, 0, nil
	case json.Number:
		if !validNumber(string(x)) {
			return 0, 0, fmt.Errorf("invalid number %q", string(x))
		}
		return sizeOf(v), 0, nil
	}
	return 0, 0, fmt.Errorf("unexpected internal type %T", v)
}

func verifySeq[E entry[E]](s *seq[E], val func(E) any) (size, depth int, err error) {
	n, maxD := 0, 0
	size = 2
	for ci, ch := range s.chunks {
		if len(ch.items) == 0 || len(ch.items) > maxChunk {
			return 0, 0, fmt.Errorf("chunk %d has %d items", ci, len(ch.items))
		}
		cd := 0
		for _, it := range ch.items {
			s, d, err := verify(val(it))
			if err != nil {
				return 0, 0, err
			}
			if n > 0 {
				size++
			}
			n++
			size += s
			cd = max(cd, d)
		}
		if cd != ch.depth {
			return 0, 0, fmt.Errorf("chunk %d cached depth %d, computed %d", ci, ch.depth, cd)
		}
		maxD = max(maxD, cd)
	}
	if n != s.n {
		return 0, 0, fmt.Errorf("cached length %d, counted %d", s.n, n)
	}
	if s.depth != maxD+1 {
		return 0, 0, fmt.Errorf("cached depth %d, computed %d", s.depth, maxD+1)
	}
	return size, maxD + 1, nil
}

func runCase(t *testing.T, tc patchCase) {
	d := mustDoc(t, tc.doc)
	before := mustMarshal(t, d)
	ops, err := ParseOps([]byte(tc.patch), Limits{})
	var got Doc
	if err == nil {
		got, err = Apply(d, ops, Limits{})
	}
	if after := mustMarshal(t, d); !bytes.Equal(before, after) {
		t.Fatalf("input document changed: %s -> %s", before, after)
	}
	if tc.err != nil {
		if !errors.Is(err, tc.err) {
			t.Fatalf("err = %v, want %v", err, tc.err)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	checkDoc(t, got)
	want := mustMarshal(t, decodeStd(t, tc.want))
	if b := mustMarshal(t, got); !bytes.Equal(b, want) {
		t.Fatalf("result %s, want %s", b, want)
	}
}

func TestPatchCases(t *testing.T) {
	for _, tc := range patchCases {
		t.Run(tc.name, func(t *testing.T) { runCase(t, tc) })
	}
}

func TestErrorMessageNamesOpAndPath(t *testing.T) {
	d := mustDoc(t, `{"a":1}`)
	ops, err := ParseOps([]byte(`[{"op":"test","path":"/a","value":1},{"op":"remove","path":"/b/c"}]`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Apply(d, ops, Limits{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "op 1") || !strings.Contains(err.Error(), `"/b/c"`) {
		t.Fatalf("err = %v", err)
	}
	_, err = ParseOps([]byte(`[{"op":"add","path":"/a","value":1},{"op":"nope","path":"/x"}]`), Limits{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "op 1") || !strings.Contains(err.Error(), `"/x"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParsePointer(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{"", []string{}, true},
		{"/", []string{""}, true},
		{"//", []string{"", ""}, true},
		{"/a/b", []string{"a", "b"}, true},
		{"/a~1b", []string{"a/b"}, true},
		{"/m~0n", []string{"m~n"}, true},
		{"/~01", []string{"~1"}, true},
		{"/~10", []string{"/0"}, true},
		{"/~00", []string{"~0"}, true},
		{"/ ", []string{" "}, true},
		{"a", nil, false},
		{"/~", nil, false},
		{"/~2", nil, false},
		{"/a/~x/b", nil, false},
		{"#/a", nil, false},
	}
	for _, tt := range tests {
		got, err := parsePointer(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("parsePointer(%q) err = %v", tt.in, err)
			continue
		}
		if tt.ok && fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
			t.Errorf("parsePointer(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if !tt.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("parsePointer(%q) err = %v, want ErrInvalid", tt.in, err)
		}
	}
}

func TestParseIndex(t *testing.T) {
	tests := []struct {
		tok    string
		n      int
		insert bool
		want   int // -1: error
	}{
		{"0", 3, false, 0}, {"2", 3, false, 2}, {"3", 3, false, -1}, {"3", 3, true, 3},
		{"4", 3, true, -1}, {"-", 3, true, 3}, {"-", 3, false, -1}, {"01", 3, false, -1},
		{"00", 3, false, -1}, {"", 3, false, -1}, {"1a", 3, false, -1}, {"-0", 3, false, -1},
		{" 1", 3, false, -1}, {"1e0", 3, false, -1}, {"0", 0, false, -1}, {"0", 0, true, 0},
		{"18446744073709551617", 3, true, -1},
	}
	for _, tt := range tests {
		got, err := parseIndex(tt.tok, tt.n, tt.insert)
		if tt.want < 0 {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("parseIndex(%q, %d, %v) = %d, %v; want ErrInvalid", tt.tok, tt.n, tt.insert, got, err)
			}
		} else if err != nil || got != tt.want {
			t.Errorf("parseIndex(%q, %d, %v) = %d, %v; want %d", tt.tok, tt.n, tt.insert, got, err, tt.want)
		}
	}
}

func TestNumEqual(t *testing.T) {
	tests := []struct {
		a, b string
		eq   bool
	}{
		{"1", "1.0", true}, {"1", "1e0", true}, {"1", "10e-1", true}, {"1", "0.1e1", true},
		{"-0", "0", true}, {"0", "0.000e-99", true}, {"-0.0", "0e100", true}, {"100", "1E2", true},
		{"100", "1e+2", true}, {"1.5", "15e-1", true}, {"-1.5", "1.5", false}, {"1", "1.0000000000000000000001", false},
		{"9007199254740993", "9007199254740992", false}, {"1e400", "10e399", true}, {"1e400", "1e401", false},
		{"1e99999999999999999999", "10e99999999999999999998", true}, {"1e99999999999999999999", "1e99999999999999999998", false},
		{"123.456", "123456e-3", true}, {"0.1", "0.10", true}, {"", "0", true}, {"2", "3", false},
		// Exponents beyond int64, with carries and borrows across the 18-digit split.
		{"1e1000000000000000000", "10e999999999999999999", true},
		{"1e1000000000000000000", "1e999999999999999999", false},
		{"100e999999999999999998", "1e1000000000000000000", true},
		{"1e-1000000000000000000", "0.1e-999999999999999999", true},
		{"1e-1000000000000000000", "10e-1000000000000000001", true},
		{"0.001e1000000000000000002", "1e999999999999999999", true},
		{"1e9999999999999999999999", "1000e9999999999999999999996", true},
		{"1e9999999999999999999999", "1000e9999999999999999999997", false},
		{"1e10000000000000000000000", "1000e9999999999999999999997", true},
		{"-1e+0009999999999999999999999", "-10e9999999999999999999998", true},
		{"1e-9999999999999999999999", "0.01e-9999999999999999999997", true},
		{"1e00000000000000000000000000005", "100000", true},
	}
	for _, tt := range tests {
		if got := numEqual(json.Number(tt.a), json.Number(tt.b)); got != tt.eq {
			t.Errorf("numEqual(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.eq)
		}
		if got := numEqual(json.Number(tt.b), json.Number(tt.a)); got != tt.eq {
			t.Errorf("numEqual(%s, %s) = %v, want %v", tt.b, tt.a, got, tt.eq)
		}
	}
	// Huge exponents stay linear: this would take many seconds with math/big.
	huge := "1e" + strings.Repeat("7", 1<<20)
	if numEqual(json.Number(huge), json.Number("10"+huge[1:])) {
		t.Error("numEqual(1eN, 10eN)")
	}
	if !numEqual(json.Number(huge), json.Number("1.0"+huge[1:])) {
		t.Error("numEqual(1eN, 1.0eN)")
	}
	// Cross-check against exact rational arithmetic on small literals.
	lits := []string{"0", "-0", "1", "-1", "1.0", "10", "1e1", "0.1", "1e-1", "0.01e1", "100e-2", "-0.5",
		"-5e-1", "2.50", "25E-1", "0.0001", "1e-4", "7", "7.000", "70e-1", "12345678901234567890", "1.2345678901234567890e19"}
	for _, a := range lits {
		for _, b := range lits {
			ra, _ := new(big.Rat).SetString(a)
			rb, _ := new(big.Rat).SetString(b)
			if want, got := ra.Cmp(rb) == 0, numEqual(json.Number(a), json.Number(b)); got != want {
				t.Errorf("numEqual(%s, %s) = %v, big.Rat says %v", a, b, got, want)
			}
		}
	}
}

// bigDecimal is the straightforward math/big version of parseDecimal, used
// as an oracle for exponents around and beyond the int64 range.
func bigDecimal(s string) (neg bool, digits string, exp *big.Int) {
	neg, intPart, frac, e, ok := splitNumber(s)
	if !ok {
		panic(s)
	}
	mant := strings.TrimLeft(intPart+frac, "0")
	exp = new(big.Int)
	if mant == "" {
		return false, "", exp
	}
	digits = strings.TrimRight(mant, "0")
	if e != "" {
		exp.SetString(e, 10)
	}
	exp.Add(exp, big.NewInt(int64(len(mant)-len(digits)-len(frac))))
	return neg, digits, exp
}

func TestNumEqualRandom(t *testing.T) {
	rnd := newRand(3)
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "0000123456789"[rnd.intn(13)]
		}
		return string(b)
	}
	gen := func(expBase string) string {
		var sb strings.Builder
		if rnd.intn(3) == 0 {
			sb.WriteByte('-')
		}
		ip := strings.TrimLeft(digits(1+rnd.intn(4)), "0")
		if ip == "" {
			ip = "0"
		}
		sb.WriteString(ip)
		if rnd.intn(2) == 0 {
			sb.WriteString("." + digits(1+rnd.intn(4)))
		}
		if expBase != "" || rnd.intn(2) == 0 {
			sb.WriteString([]string{"e", "E", "e+", "e-", "E-"}[rnd.intn(5)])
			sb.WriteString(strings.Repeat("0", rnd.intn(2)) + expBase + digits(1+rnd.intn(2)))
		}
		return sb.String()
	}
	for range 30000 {
		// Exponents of a few digits, or close to 10^18 / 10^24 so that carries
		// and borrows cross the 18-digit split.
		base := []string{"", "", "99999999999999999", "100000000000000000", "9999999999999999999999", "1000000000000000000000"}[rnd.intn(6)]
		a, b := gen(base), gen(base)
		na, da, ea := bigDecimal(a)
		nb, db, eb := bigDecimal(b)
		want := da == db && (da == "" || na == nb && ea.Cmp(eb) == 0)
		if got := numEqual(json.Number(a), json.Number(b)); got != want {
			t.Fatalf("numEqual(%s, %s) = %v, want %v", a, b, got, want)
		}
		// An equal literal with the point moved: 0.<all digits>e<exp+len(int)>.
		neg, ip, frac, e, _ := splitNumber(a)
		exp := new(big.Int)
		if e != "" {
			exp.SetString(e, 10)
		}
		exp.Add(exp, big.NewInt(int64(len(ip))))
		c := "0." + ip + frac + strings.Repeat("0", rnd.intn(3)) + "e" + exp.String()
		if neg {
			c = "-" + c
		}
		if !numEqual(json.Number(a), json.Number(c)) || !numEqual(json.Number(c), json.Number(a)) {
			t.Fatalf("numEqual(%s, %s) = false", a, c)
		}
	}
}

// TestAtomicity applies batches whose third op fails, in several ways, to
// documents large enough to use several chunks, and checks that the input
// stays byte-identical.
func TestAtomicity(t *testing.T) {
	var sb strings.Builder
	sb.WriteString(`{"list":[`)
	for i := range 500 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"i":%d}`, i)
	}
	sb.WriteString(`],"obj":{`)
	for i := range 500 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"k%03d":[%d]`, i, i)
	}
	sb.WriteString(`},"s":"x"}`)
	doc := sb.String()

	third := []struct {
		op  string
		err error
	}{
		{`{"op":"remove","path":"/missing"}`, ErrInvalid},
		{`{"op":"test","path":"/s","value":"y"}`, ErrTestFailed},
		{`{"op":"add","path":"/list/9999","value":1}`, ErrInvalid},
		{`{"op":"replace","path":"","value":1}`, ErrInvalid},
		{`{"op":"move","from":"/obj","path":"/obj/k000/x"}`, ErrInvalid},
	}
	first2 := `{"op":"add","path":"/list/3/j","value":"new"},{"op":"remove","path":"/obj/k250/0"},` +
		`{"op":"copy","from":"/obj","path":"/list/-"},{"op":"add","path":"/obj/k000/-","value":{"<&>":1e10}},` +
		`{"op":"replace","path":"/s","value":"z"}`
	for _, th := range third {
		d := mustDoc(t, doc)
		before, _ := d.MarshalJSON()
		size := d.Size()
		ops, err := ParseOps([]byte(`[`+first2+`,`+th.op+`]`), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		// Sanity: the first ops alone succeed.
		ok, err := Apply(d, ops[:len(ops)-1], Limits{})
		if err != nil {
			t.Fatalf("prefix failed: %v", err)
		}
		checkDoc(t, ok)
		ret, err := Apply(d, ops, Limits{})
		if !errors.Is(err, th.err) {
			t.Fatalf("%s: err = %v, want %v", th.op, err, th.err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("op %d", len(ops)-1)) {
			t.Errorf("error does not name the failing op: %v", err)
		}
		after, _ := d.MarshalJSON()
		if !bytes.Equal(before, after) || d.Size() != size {
			t.Fatalf("%s: document changed by failed batch", th.op)
		}
		if r, _ := ret.MarshalJSON(); !bytes.Equal(r, before) {
			t.Fatalf("%s: Apply did not return the original document on error", th.op)
		}
		checkDoc(t, d)
	}

	// The literal case from the brief: the third op of the batch fails.
	d := mustDoc(t, `{"a":1,"b":[1,2]}`)
	before, _ := d.MarshalJSON()
	ops, err := ParseOps([]byte(`[{"op":"add","path":"/c","value":3},{"op":"remove","path":"/b/0"},{"op":"remove","path":"/zzz"}]`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(d, ops, Limits{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	if after, _ := d.MarshalJSON(); !bytes.Equal(before, after) {
		t.Fatalf("document changed: %s", after)
	}
}

// TestOldVersionsStable keeps every intermediate Doc of a long sequence of
// batches and checks that none of them changes afterwards.
func TestOldVersionsStable(t *testing.T) {
	d := mustDoc(t, `{"a":[],"o":{}}`)
	var docs []Doc
	var encs [][]byte
	var live []int // keys k<i> present in /o
	rnd := newRand(7)
	for i := range 200 {
		var patch string
		if i%7 == 6 && len(live) > 2 {
			j := rnd.intn(len(live))
			patch = fmt.Sprintf(`[{"op":"remove","path":"/a/%d"},{"op":"remove","path":"/o/k%d"},{"op":"copy","from":"/o","path":"/c%d"}]`,
				rnd.intn(i/2), live[j], i%3)
			live = slices.Delete(live, j, j+1)
		} else {
			live = append(live, i)
			patch = fmt.Sprintf(`[{"op":"add","path":"/a/-","value":%d},{"op":"add","path":"/o/k%d","value":{"v":[%d]}},`+
				`{"op":"add","path":"/o/k%d/v/0","value":"x"}]`, i, i, i, live[rnd.intn(len(live))])
		}
		ops, err := ParseOps([]byte(patch), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		nd, err := Apply(d, ops, Limits{})
		if err != nil {
			t.Fatalf("batch %d: %v\n%s", i, err, patch)
		}
		checkDoc(t, nd)
		docs = append(docs, d)
		b, _ := d.MarshalJSON()
		encs = append(encs, b)
		d = nd
	}
	for i, old := range docs {
		if b, _ := old.MarshalJSON(); !bytes.Equal(b, encs[i]) {
			t.Fatalf("version %d changed after later batches", i)
		}
		if i%10 == 0 {
			checkDoc(t, old)
		}
	}
}

func TestSizeInvariant(t *testing.T) {
	d := mustDoc(t, `{"plain":"abc","esc":"<>&\"\\/\u0001\u007f\u2028\u2029","uni":"héllo 世界 🚀","nums":[1.0,-0,1e10,0.000]}`)
	batches := []string{
		`[{"op":"add","path":"/html","value":"<script>alert('&')</script>"}]`,
		`[{"op":"add","path":"/ctrl","value":"\u0000\u0001\u0002\u0007\b\t\n\u000b\f\r\u000e\u001f"}]`,
		`[{"op":"add","path":"/<key>&","value":{"\u2028":"\u2029","é":["ü",1.0,-0,1e10,1E-7,-0.0]}}]`,
		`[{"op":"add","path":"/nums/-","value":123456789012345678901234567890.123456789}]`,
		`[{"op":"replace","path":"/esc","value":""},{"op":"remove","path":"/uni"}]`,
		`[{"op":"move","from":"/<key>&","path":"/moved"},{"op":"copy","from":"/moved","path":"/nums/0"}]`,
		`[{"op":"remove","path":"/nums/0"},{"op":"remove","path":"/nums/0"},{"op":"remove","path":"/nums/0"}]`,
		`[{"op":"replace","path":"","value":{"only":"\ud83d\ude00 \\u0000"}}]`,
		`[{"op":"remove","path":"/only"}]`,
	}
	for i, b := range batches {
		ops, err := ParseOps([]byte(b), Limits{})
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if d, err = Apply(d, ops, Limits{}); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		checkDoc(t, d)
	}
	if d.Size() != 2 {
		t.Fatalf("empty document Size = %d", d.Size())
	}

	// Values built by hand, including invalid UTF-8 and non-canonical Go
	// types that go through encoding/json.
	ops := []Op{
		{Op: "add", Path: "/bad", Value: "a\xffb\xc0"},
		{Op: "add", Path: "/\xfe", Value: 1.5},
		{Op: "add", Path: "/int", Value: []int{1, 2}},
		{Op: "add", Path: "/nilmap", Value: map[string]any(nil)},
		{Op: "add", Path: "/zero", Value: json.Number("")},
		{Op: "add", Path: "/struct", Value: struct {
			A string `json:"a"`
		}{"<"}},
		{Op: "test", Path: "/int", Value: []any{1.0, json.Number("2")}},
	}
	d, err := Apply(d, ops, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkDoc(t, d)
	if _, err := Apply(d, []Op{{Op: "add", Path: "/x", Value: json.Number("1x")}}, Limits{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid json.Number accepted: %v", err)
	}
	if _, err := Apply(d, []Op{{Op: "add", Path: "/x", Value: make(chan int)}}, Limits{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("channel value accepted: %v", err)
	}
	var zero Doc
	checkDoc(t, zero)
	nd, err := Apply(zero, []Op{{Op: "test", Path: "", Value: map[string]any{}}, {Op: "add", Path: "/a", Value: nil}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkDoc(t, nd)
	if b, _ := nd.MarshalJSON(); string(b) != `{"a":null}` {
		t.Fatalf("Apply on zero Doc: %s", b)
	}
}

func TestLimits(t *testing.T) {
	lim := Limits{MaxOps: 3, MaxDepth: 4, MaxBytes: 64}
	d, err := NewDoc([]byte(`{"a":{"b":{}}}`), lim)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := d.MarshalJSON()
	tests := []struct {
		name  string
		patch string
		err   error // from ParseOps or Apply
	}{
		{"ops ok", `[{"op":"add","path":"/x","value":1},{"op":"add","path":"/y","value":2},{"op":"add","path":"/z","value":3}]`, nil},
		{"too many ops", `[{"op":"add","path":"/x","value":1},{"op":"add","path":"/y","value":2},{"op":"add","path":"/z","value":3},{"op":"remove","path":"/x"}]`, ErrTooLarge},
		{"value too deep", `[{"op":"add","path":"/x","value":[[[[[1]]]]]}]`, ErrTooLarge},
		{"depth ok", `[{"op":"add","path":"/a/b/c","value":[]}]`, nil},
		{"result too deep", `[{"op":"add","path":"/a/b/c","value":[[]]}]`, ErrTooLarge},
		{"copy makes too deep", `[{"op":"copy","from":"/a","path":"/a/b/c"}]`, ErrTooLarge},
		{"move makes too deep", `[{"op":"add","path":"/q","value":[[]]},{"op":"move","from":"/q","path":"/a/b/q"}]`, ErrTooLarge},
		{"transient depth ok", `[{"op":"add","path":"/a/b/c","value":[[]]},{"op":"remove","path":"/a/b/c"}]`, nil},
		{"bytes ok", `[{"op":"add","path":"/s","value":"` + strings.Repeat("x", 64-len(before)-7) + `"}]`, nil},
		{"too many bytes", `[{"op":"add","path":"/s","value":"` + strings.Repeat("x", 64-len(before)-6) + `"}]`, ErrTooLarge},
		{"escapes count", `[{"op":"add","path":"/s","value":"` + strings.Repeat(`\u0001`, 10) + `"}]`, ErrTooLarge},
		{"html characters count once", `[{"op":"add","path":"/s","value":"` + strings.Repeat("<", 10) + `"}]`, nil},
		{"transient bytes ok", `[{"op":"add","path":"/s","value":"` + strings.Repeat("x", 100) + `"},{"op":"remove","path":"/s"}]`, nil},
		{"copy grows", `[{"op":"copy","from":"","path":"/c1"},{"op":"copy","from":"","path":"/c2"}]`, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := ParseOps([]byte(tt.patch), lim)
			if err == nil {
				var nd Doc
				nd, err = Apply(d, ops, lim)
				if err == nil {
					checkDoc(t, nd)
					if nd.Size() > lim.MaxBytes || nd.root.depth > lim.MaxDepth {
						t.Fatalf("result exceeds limits: size %d depth %d", nd.Size(), nd.root.depth)
					}
				}
			}
			if tt.err == nil && err != nil || tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if after, _ := d.MarshalJSON(); !bytes.Equal(before, after) {
				t.Fatal("document changed")
			}
		})
	}
	// Apply checks MaxOps itself too (ops built without ParseOps).
	many := make([]Op, 4)
	for i := range many {
		many[i] = Op{Op: "add", Path: fmt.Sprintf("/k%d", i), Value: true}
	}
	if _, err := Apply(d, many, lim); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Apply MaxOps: err = %v", err)
	}
	// NewDoc limits.
	if _, err := NewDoc([]byte(`{"a":[[[[1]]]]}`), lim); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("NewDoc depth: %v", err)
	}
	if _, err := NewDoc([]byte(`{"a":"`+strings.Repeat(`\u001f`, 10)+`"}`), lim); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("NewDoc bytes: %v", err)
	}
	// Unlimited copy doubling stops at the hard cap instead of overflowing.
	ops := make([]Op, 80)
	for i := range ops {
		ops[i] = Op{Op: "copy", From: "", Path: fmt.Sprintf("/c%d", i)}
	}
	if _, err := Apply(d, ops, Limits{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("copy doubling: %v", err)
	}
}

func TestNewDoc(t *testing.T) {
	for _, bad := range []string{``, `[]`, `null`, `1`, `"x"`, `{`, `{} {}`, `{}x`, `{"a":01}`, `{"a":1,}`} {
		if _, err := NewDoc([]byte(bad), Limits{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewDoc(%q) err = %v, want ErrInvalid", bad, err)
		}
	}
	d := mustDoc(t, " {\"b\" : 1.50 , \"a\":[ true,false,null,\"\\u003c\"] }\n")
	if got, _ := d.MarshalJSON(); string(got) != `{"a":[true,false,null,"<"],"b":1.50}` {
		t.Fatalf("got %s", got)
	}
	m := d.Value().(map[string]any)
	if m["b"] != json.Number("1.50") {
		t.Fatalf("number not kept as json.Number: %#v", m["b"])
	}
	m["b"] = "mutated" // Value returns a copy
	if got, _ := d.MarshalJSON(); !bytes.Contains(got, []byte("1.50")) {
		t.Fatal("mutating Value() changed the Doc")
	}
}

func TestParseOpsFields(t *testing.T) {
	ops, err := ParseOps([]byte(`[{"op":"add","path":"/a~1b","value":{"n":1.10}},{"op":"move","from":"/x","path":"/y"},{"op":"test","path":"","value":null}]`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 3 || ops[0].Op != "add" || ops[0].Path != "/a~1b" || ops[1].From != "/x" || ops[2].Value != nil {
		t.Fatalf("ops = %+v", ops)
	}
	if n := ops[0].Value.(map[string]any)["n"]; n != json.Number("1.10") {
		t.Fatalf("value number = %#v", n)
	}
	if len(ops[0].path) != 1 || ops[0].path[0] != "a/b" {
		t.Fatalf("parsed path = %q", ops[0].path)
	}
	// Changing Path after parsing is honoured.
	d := mustDoc(t, `{}`)
	ops[0].Path = "/c"
	nd, err := Apply(d, ops[:1], Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := nd.MarshalJSON(); string(b) != `{"c":{"n":1.10}}` {
		t.Fatalf("got %s", b)
	}
}

// TestLargeContainers drives objects and arrays through chunk splits and
// merges, in batches that mostly succeed, and compares every result with the
// reference implementation.
func TestLargeContainers(t *testing.T) {
	for _, size := range []int{4, 16, 128} {
		t.Run(fmt.Sprintf("chunk%d", size), func(t *testing.T) {
			setChunkSize(t, size)
			testLargeContainers(t, map[int]int{4: 200, 16: 150, 128: 120}[size])
		})
	}
}

// setChunkSize switches to chunks of at most max items for one test.
func setChunkSize(t testing.TB, max int) {
	old := [3]int{maxChunk, fillChunk, minChunk}
	maxChunk, fillChunk, minChunk = max, max*3/4, max/4
	t.Cleanup(func() { maxChunk, fillChunk, minChunk = old[0], old[1], old[2] })
}

func testLargeContainers(t *testing.T, batches int) {
	d := mustDoc(t, `{"o":{},"a":[]}`)
	ref := decodeStd(t, `{"o":{},"a":[]}`)
	rnd := newRand(1)
	const budget = 0
	failed := 0
	maxKeys, maxElems, maxChunks, grown, shrunk := 0, 0, 0, 0, 0
	for batch := range batches {
		state := deepCopy(ref)
		var ops []string
		phase := batch * 500 / batches // phases are laid out for 500 batches
		nops := 1 + rnd.intn(12)
		if phase < 150 || phase >= 300 && phase < 400 {
			nops = 10 + rnd.intn(20)
		}
		for range nops {
			obj := state.(map[string]any)["o"].(map[string]any)
			alen := len(state.(map[string]any)["a"].([]any))
			newKey := func() string { return fmt.Sprintf("k%04d", rnd.intn(5000)) }
			anyKey := func() string {
				if len(obj) > 0 && rnd.intn(8) != 0 {
					for k := range obj { // random start
						return k
					}
				}
				return newKey()
			}
			// Phases: grow, mixed, shrink (merges), grow again.
			addW, rmW := 2, 2
			switch {
			case phase < 150 || phase >= 400:
				addW, rmW = 6, 1
			case phase >= 300:
				addW, rmW = 1, 10
			}
			var op string
			switch r := rnd.intn(2*addW + 2*rmW + 3); {
			case r < addW:
				k := newKey()
				if rnd.intn(6) == 0 {
					k = anyKey()
				}
				op = fmt.Sprintf(`{"op":"add","path":"/o/%s","value":{"v":%d,"d":[[%d]]}}`, k, batch, rnd.intn(9))
			case r < 2*addW:
				op = fmt.Sprintf(`{"op":"add","path":"/a/%d","value":[%d]}`, rnd.intn(alen+1), batch)
			case r < 2*addW+rmW:
				op = fmt.Sprintf(`{"op":"remove","path":"/o/%s"}`, anyKey())
			case r < 2*addW+2*rmW:
				if alen == 0 {
					continue
				}
				op = fmt.Sprintf(`{"op":"remove","path":"/a/%d"}`, rnd.intn(alen))
			case r < 2*addW+2*rmW+1:
				if alen == 0 {
					continue
				}
				op = fmt.Sprintf(`{"op":"move","from":"/a/%d","path":"/a/%d"}`, rnd.intn(alen), rnd.intn(alen))
			case r < 2*addW+2*rmW+2:
				op = fmt.Sprintf(`{"op":"replace","path":"/o/%s/d/0","value":{"deep":[[[%d]]]}}`, anyKey(), batch)
			case r < 2*addW+2*rmW+3 && rnd.intn(8) > 0:
				op = fmt.Sprintf(`{"op":"copy","from":"/o/%s","path":"/o/%s"}`, anyKey(), newKey())
			default:
				// Compare whole containers, built with a different chunk layout.
				v := map[string]any{"o": obj, "a": state.(map[string]any)["a"]}
				if rnd.intn(2) == 0 {
					op = fmt.Sprintf(`{"op":"test","path":"","value":%s}`, mustMarshal(t, v))
				} else {
					op = fmt.Sprintf(`{"op":"test","path":"/a","value":%s}`, mustMarshal(t, v["a"]))
				}
			}
			parsed, err := ParseOps([]byte("["+op+"]"), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			// Step the model in place; only a failing move could leave it
			// half-applied, so that one works on a copy.
			cur := state
			if parsed[0].Op == "move" {
				cur = deepCopy(state)
			}
			next, err := refOp(cur, parsed[0])
			if err != nil {
				continue // keep the batch applicable
			}
			state = next
			ops = append(ops, op)
		}
		if batch%10 == 9 { // occasionally end with a failing op
			ops = append(ops, `{"op":"test","path":"/o","value":null}`)
		}
		patch := "[" + strings.Join(ops, ",") + "]"
		parsed, err := ParseOps([]byte(patch), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		before, _ := d.MarshalJSON()
		nd, err := Apply(d, parsed, Limits{})
		rv, rerr := refApply(ref, parsed, budget)
		if kindOf(err) != kindOf(rerr) {
			t.Fatalf("batch %d: err %v, reference %v\n%s", batch, err, rerr, patch)
		}
		if after, _ := d.MarshalJSON(); !bytes.Equal(before, after) {
			t.Fatalf("batch %d changed its input", batch)
		}
		if err != nil {
			failed++
			continue
		}
		checkDoc(t, nd)
		if got, want := mustMarshal(t, nd), mustMarshal(t, rv); !bytes.Equal(got, want) {
			t.Fatalf("batch %d: got\n%s\nwant\n%s", batch, got, want)
		}
		d, ref = nd, rv
		ci, off, _ := d.root.find("o")
		obj := d.root.at(ci, off).val.(*object)
		ci, off, _ = d.root.find("a")
		arr := d.root.at(ci, off).val.(*array)
		maxKeys, maxChunks, maxElems = max(maxKeys, obj.n), max(maxChunks, len(obj.chunks), len(arr.chunks)), max(maxElems, arr.n)
		if phase < 300 {
			grown = obj.n
		}
		if phase < 400 {
			shrunk = obj.n
		}
	}
	t.Logf("%d bytes at the end; max %d keys, %d elements, %d chunks; %d -> %d keys when shrinking; %d failing batches",
		d.Size(), maxKeys, maxElems, maxChunks, grown, shrunk, failed)
	if maxChunks < 2 || shrunk > grown/2 {
		t.Fatal("generator did not exercise chunk splits and merges")
	}
	if failed == 0 || failed > 100 {
		t.Fatalf("%d failing batches: generator is off", failed)
	}
}

// TestConcurrentApply derives many documents from one shared Doc in
// parallel (run with -race).
func TestConcurrentApply(t *testing.T) {
	base := mustDoc(t, `{"a":{"b":[1,2,3]},"c":"x"}`)
	want, _ := base.MarshalJSON()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := base
			for i := range 200 {
				ops := []Op{
					{Op: "add", Path: "/a/b/-", Value: json.Number(fmt.Sprint(i))},
					{Op: "add", Path: fmt.Sprintf("/g%d", g), Value: map[string]any{"i": json.Number(fmt.Sprint(i))}},
					{Op: "copy", From: "/a", Path: "/copy"},
					{Op: "remove", Path: "/a/b/0"},
				}
				nd, err := Apply(d, ops, Limits{})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := base.MarshalJSON(); err != nil {
					t.Error(err)
				}
				if nd.Size() != len(mustMarshal(t, nd.Value())) {
					t.Error("size invariant broken")
					return
				}
				if i%2 == 0 {
					d = nd
				}
			}
		}()
	}
	wg.Wait()
	if got, _ := base.MarshalJSON(); !bytes.Equal(got, want) {
		t.Fatalf("base changed: %s", got)
	}
}
