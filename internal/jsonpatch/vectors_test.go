package jsonpatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
)

// vector is one case of testdata/vectors.json, the JSON Patch test vectors
// shared with the TypeScript SDK (web/client/test/jsonpatch.test.mjs runs
// the same file through its applyPatch): the document, the batch, and
// either the resulting document or the error code the server answers
// (bad_request, test_failed, too_large).
type vector struct {
	Name     string          `json:"name"`
	Doc      json.RawMessage `json:"doc"`
	Ops      json.RawMessage `json:"ops"`
	Expected json.RawMessage `json:"expected"`
	Error    string          `json:"error"`
}

// errorCode maps an error of this package to the wire code the server
// sends for it (internal/rooms does the same mapping).
func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrTestFailed):
		return "test_failed"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrInvalid):
		return "bad_request"
	}
	return "unexpected: " + err.Error()
}

// plain decodes JSON with float64 numbers, so that 1 and 1.0 compare equal.
func plain(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

func TestSharedVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []vector
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vectors); err != nil {
		t.Fatalf("testdata/vectors.json: %v", err)
	}
	if len(vectors) < 40 {
		t.Fatalf("only %d vectors", len(vectors))
	}
	names := map[string]bool{}
	for _, v := range vectors {
		if names[v.Name] {
			t.Errorf("duplicate vector name %q", v.Name)
		}
		names[v.Name] = true
		if (v.Error == "") == (v.Expected == nil) {
			t.Errorf("%s: a vector has exactly one of expected and error", v.Name)
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			// The server's limits for client batches: strict text, no
			// duplicate names (they change nothing for valid vectors).
			lim := Limits{RejectInvalidText: true, RejectDuplicateNames: true}
			doc, err := NewDoc(v.Doc, Limits{})
			if err != nil {
				t.Fatalf("doc: %v", err)
			}
			out, err := func() (Doc, error) {
				ops, err := ParseOps(v.Ops, lim)
				if err != nil {
					return Doc{}, err
				}
				return Apply(doc, ops, lim)
			}()
			if v.Error != "" {
				if err == nil {
					got, _ := out.MarshalJSON()
					t.Fatalf("want error %s, got document %s", v.Error, got)
				}
				if code := errorCode(err); code != v.Error {
					t.Fatalf("want error %s, got %s (%v)", v.Error, code, err)
				}
				before, _ := doc.MarshalJSON()
				if !reflect.DeepEqual(plain(t, before), plain(t, v.Doc)) {
					t.Fatalf("a refused batch changed the input document: %s", before)
				}
				return
			}
			if err != nil {
				t.Fatalf("want %s, got error %v", v.Expected, err)
			}
			got, _ := out.MarshalJSON()
			if !reflect.DeepEqual(plain(t, got), plain(t, v.Expected)) {
				t.Fatalf("got  %s\nwant %s", got, v.Expected)
			}
		})
	}
}
