package jsonpatch

import (
	"strings"
	"testing"
)

// TestErrorTextsCarryNoDocumentValues: a writer without read permission
// learns nothing about the document's values from an error text: not the
// contents (a test that fails), nor an array's length, nor the document's
// size or depth. Paths and limits may appear.
func TestErrorTextsCarryNoDocumentValues(t *testing.T) {
	const secret = "s3cr3t-value"
	doc := `{"k":"` + secret + `","arr":[1,2,3,4,5,6,7],"big":"` + strings.Repeat("x", 987) + `","deep":{"a":{"b":{"c":{}}}}}`
	lim := Limits{MaxBytes: 1100, MaxDepth: 5}
	d, err := NewDoc([]byte(doc), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, patch string }{
		{"test fails", `[{"op":"test","path":"/k","value":"guess"}]`},
		{"index past end", `[{"op":"replace","path":"/arr/99","value":0}]`},
		{"huge index", `[{"op":"remove","path":"/arr/99999999999999"}]`},
		{"too large", `[{"op":"add","path":"/more","value":"` + strings.Repeat("y", 200) + `"}]`},
		{"too deep", `[{"op":"add","path":"/deep/a/b/c/d","value":{"e":{}}}]`},
		{"not a container", `[{"op":"add","path":"/k/x","value":1}]`},
	} {
		ops, err := ParseOps([]byte(tc.patch), Limits{})
		if err != nil {
			t.Fatalf("%s: parse: %v", tc.name, err)
		}
		_, err = Apply(d, ops, lim)
		if err == nil {
			t.Fatalf("%s: applied, want an error", tc.name)
		}
		msg := err.Error()
		for _, leak := range []string{secret, "length", "7)", "1128", "1129", "1130", "987", "nested 6", "nested 7"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: error %q carries a document value (%q)", tc.name, msg, leak)
			}
		}
	}
}
