package jsonpatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// This file holds a deliberately naive reference implementation of RFC 6902
// on plain decoded values (deep copies, in-place mutation), used as an
// oracle by the randomized and fuzz tests. It shares only numEqual with the
// package (which has its own table test against math/big).

var errRefBudget = errors.New("reference: document too large to model")

type testRand struct{ r *rand.Rand }

func newRand(seed uint64) *testRand {
	return &testRand{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}
func (r *testRand) intn(n int) int { return r.r.IntN(n) }
func kindOf(err error) error {
	return firstKind(err, ErrInvalid, ErrTestFailed, ErrTooLarge, errRefBudget)
}
func firstKind(err error, ks ...error) error {
	if err == nil {
		return nil
	}
	for _, k := range ks {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

// refApply applies ops to a deep copy of doc. It gives up with errRefBudget
// once the document's encoding exceeds (roughly) budget bytes (0: no limit).
func refApply(doc any, ops []Op, budget int) (any, error) {
	root := deepCopy(doc)
	for i, op := range ops {
		var err error
		if root, err = refOp(root, op); err != nil {
			return nil, fmt.Errorf("reference op %d: %w", i, err)
		}
		if budget > 0 && refTooBig(root, &budget) {
			return nil, errRefBudget
		}
	}
	return root, nil
}

// refTooBig reports whether v's encoding is (roughly) larger than *budget,
// stopping early; it consumes *budget only transiently.
func refTooBig(v any, budget *int) bool {
	b := *budget
	defer func() { *budget = b }()
	var walk func(any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case map[string]any:
			*budget -= 2
			for k, e := range x {
				if *budget -= len(k) + 4; *budget < 0 || walk(e) {
					return true
				}
			}
		case []any:
			*budget -= 2
			for _, e := range x {
				if *budget--; *budget < 0 || walk(e) {
					return true
				}
			}
		case string:
			*budget -= len(x) + 2
		case json.Number:
			*budget -= len(x)
		default:
			*budget -= 4
		}
		return *budget < 0
	}
	return walk(v)
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

var badEscape = regexp.MustCompile(`~([^01]|$)`)

func refPointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, ErrInvalid
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		if badEscape.MatchString(t) {
			return nil, ErrInvalid
		}
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, nil
}

var indexRE = regexp.MustCompile(`^(0|[1-9][0-9]{0,15})$`)

func refIndex(tok string, n int, insert bool) (int, error) {
	if tok == "-" && insert {
		return n, nil
	}
	if !indexRE.MatchString(tok) {
		return 0, ErrInvalid
	}
	i, _ := strconv.Atoi(tok)
	if i > n || i == n && !insert {
		return 0, ErrInvalid
	}
	return i, nil
}

func refNormalize(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, ErrInvalid
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, ErrInvalid
	}
	return out, nil
}

func refGet(root any, path []string) (any, error) {
	cur := root
	for _, t := range path {
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[t]
			if !ok {
				return nil, ErrInvalid
			}
			cur = v
		case []any:
			i, err := refIndex(t, len(x), false)
			if err != nil {
				return nil, err
			}
			cur = x[i]
		default:
			return nil, ErrInvalid
		}
	}
	return cur, nil
}

// refEdit calls f on the parent of path's target and stores back what it
// returns (slices may move).
func refEdit(c any, path []string, f func(parent any, tok string) (any, error)) (any, error) {
	if len(path) == 1 {
		return f(c, path[0])
	}
	switch x := c.(type) {
	case map[string]any:
		child, ok := x[path[0]]
		if !ok {
			return nil, ErrInvalid
		}
		nc, err := refEdit(child, path[1:], f)
		if err != nil {
			return nil, err
		}
		x[path[0]] = nc
		return x, nil
	case []any:
		i, err := refIndex(path[0], len(x), false)
		if err != nil {
			return nil, err
		}
		nc, err := refEdit(x[i], path[1:], f)
		if err != nil {
			return nil, err
		}
		x[i] = nc
		return x, nil
	}
	return nil, ErrInvalid
}

func refAdd(root any, path []string, v any) (any, error) {
	if len(path) == 0 {
		if _, ok := v.(map[string]any); !ok {
			return nil, ErrInvalid
		}
		return v, nil
	}
	return refEdit(root, path, func(p any, tok string) (any, error) {
		switch x := p.(type) {
		case map[string]any:
			x[tok] = v
			return x, nil
		case []any:
			i, err := refIndex(tok, len(x), true)
			if err != nil {
				return nil, err
			}
			out := append(append(append([]any{}, x[:i]...), v), x[i:]...)
			return out, nil
		}
		return nil, ErrInvalid
	})
}

func refRemove(root any, path []string) (any, any, error) {
	if len(path) == 0 {
		return nil, nil, ErrInvalid
	}
	var removed any
	nr, err := refEdit(root, path, func(p any, tok string) (any, error) {
		switch x := p.(type) {
		case map[string]any:
			v, ok := x[tok]
			if !ok {
				return nil, ErrInvalid
			}
			removed = v
			delete(x, tok)
			return x, nil
		case []any:
			i, err := refIndex(tok, len(x), false)
			if err != nil {
				return nil, err
			}
			removed = x[i]
			return append(append([]any{}, x[:i]...), x[i+1:]...), nil
		}
		return nil, ErrInvalid
	})
	return nr, removed, err
}

func refEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !refEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !refEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		return ok && numEqual(x, y)
	}
	return a == b
}

func refOp(root any, op Op) (any, error) {
	path, err := refPointer(op.Path)
	if err != nil {
		return nil, err
	}
	switch op.Op {
	case "add", "replace":
		v, err := refNormalize(op.Value)
		if err != nil {
			return nil, err
		}
		if op.Op == "replace" {
			if _, err := refGet(root, path); err != nil {
				return nil, err
			}
			if len(path) > 0 {
				return refEdit(root, path, func(p any, tok string) (any, error) {
					if arr, ok := p.([]any); ok {
						i, _ := refIndex(tok, len(arr), false)
						arr[i] = v
						return arr, nil
					}
					p.(map[string]any)[tok] = v
					return p, nil
				})
			}
		}
		return refAdd(root, path, v)
	case "remove":
		nr, _, err := refRemove(root, path)
		return nr, err
	case "move":
		from, err := refPointer(op.From)
		if err != nil {
			return nil, err
		}
		if len(from) < len(path) && slices.Equal(from, path[:len(from)]) {
			return nil, ErrInvalid
		}
		nr, v, err := refRemove(root, from)
		if len(from) == 0 {
			// Removing the root is invalid, but moving "" onto "" is a no-op.
			if len(path) == 0 {
				return root, nil
			}
			return nil, ErrInvalid
		}
		if err != nil {
			return nil, err
		}
		return refAdd(nr, path, v)
	case "copy":
		from, err := refPointer(op.From)
		if err != nil {
			return nil, err
		}
		v, err := refGet(root, from)
		if err != nil {
			return nil, err
		}
		return refAdd(root, path, deepCopy(v))
	case "test":
		v, err := refGet(root, path)
		if err != nil {
			return nil, err
		}
		want, err := refNormalize(op.Value)
		if err != nil {
			return nil, err
		}
		if !refEqual(v, want) {
			return nil, ErrTestFailed
		}
		return root, nil
	}
	return nil, ErrInvalid
}

func TestReferenceAgreesOnCases(t *testing.T) {
	for _, tc := range patchCases {
		ops, err := ParseOps([]byte(tc.patch), Limits{})
		if err != nil {
			continue
		}
		got, err := refApply(decodeStd(t, tc.doc), ops, 1<<20)
		if tc.err != nil {
			if kindOf(err) != tc.err {
				t.Errorf("%s: reference err %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: reference err %v", tc.name, err)
			continue
		}
		if g, w := mustMarshal(t, got), mustMarshal(t, decodeStd(t, tc.want)); !bytes.Equal(g, w) {
			t.Errorf("%s: reference got %s want %s", tc.name, g, w)
		}
	}
}

// fuzzLimits keeps fuzz documents small enough that the reference stays
// fast, while still allowing objects and arrays of several chunks.
var fuzzLimits = Limits{MaxOps: 32, MaxDepth: 12, MaxBytes: 4096}

func FuzzApply(f *testing.F) {
	// Tiny chunks make small fuzz documents exercise chunk splits and merges.
	setChunkSize(f, 8)
	for _, tc := range patchCases {
		f.Add([]byte(tc.doc), []byte(tc.patch))
	}
	var big, arr strings.Builder
	big.WriteString(`{"o":{`)
	arr.WriteString(`{"a":[`)
	for i := range 300 {
		if i > 0 {
			big.WriteByte(',')
			arr.WriteByte(',')
		}
		fmt.Fprintf(&big, `"%d":%d`, i, i%10)
		fmt.Fprintf(&arr, `%d`, i%10)
	}
	big.WriteString(`}}`)
	arr.WriteString(`]}`)
	f.Add([]byte(big.String()), []byte(`[{"op":"remove","path":"/o/150"},{"op":"add","path":"/o/1500","value":[1]},{"op":"copy","from":"/o","path":"/p"},{"op":"add","path":"/p/1500/-","value":2}]`))
	f.Add([]byte(arr.String()), []byte(`[{"op":"remove","path":"/a/150"},{"op":"add","path":"/a/7","value":[1]},{"op":"move","from":"/a/0","path":"/a/-"},{"op":"test","path":"/a/6","value":7}]`))
	f.Add([]byte(`{"x":{}}`), []byte(`[{"op":"copy","from":"","path":"/x/y"},{"op":"copy","from":"","path":"/x/y"},{"op":"copy","from":"","path":"/x/y"}]`))

	f.Fuzz(func(t *testing.T, docRaw, patchRaw []byte) {
		lim := fuzzLimits
		d, err := NewDoc(docRaw, lim)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("NewDoc: unexpected error %v", err)
			}
			return
		}
		checkDoc(t, d)
		before := mustMarshal(t, d)
		ops, err := ParseOps(patchRaw, lim)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("ParseOps: unexpected error %v", err)
			}
			return
		}
		nd, err := Apply(d, ops, lim)
		if after := mustMarshal(t, d); !bytes.Equal(before, after) {
			t.Fatalf("Apply changed its input:\n%s\n%s", before, after)
		}
		checkDoc(t, d)
		want, refErr := refApply(d.Value(), ops, 1<<20)
		if err != nil {
			switch {
			case errors.Is(err, ErrTooLarge):
				if refErr == nil {
					b := mustMarshal(t, want)
					if len(b) <= lim.MaxBytes && plainDepth(want, lim.MaxDepth) <= lim.MaxDepth {
						t.Fatalf("ErrTooLarge but the reference result fits: %v\n%s", err, b)
					}
				} else if kindOf(refErr) != errRefBudget {
					t.Fatalf("err %v, reference %v", err, refErr)
				}
			case kindOf(err) == ErrInvalid || kindOf(err) == ErrTestFailed:
				if kindOf(refErr) != kindOf(err) && kindOf(refErr) != errRefBudget {
					t.Fatalf("err %v, reference %v", err, refErr)
				}
			default:
				t.Fatalf("unexpected error %v", err)
			}
			if b, _ := nd.MarshalJSON(); !bytes.Equal(b, before) {
				t.Fatalf("Apply returned a different document with its error")
			}
			return
		}
		if refErr != nil {
			if kindOf(refErr) == errRefBudget {
				return
			}
			t.Fatalf("Apply succeeded, reference failed: %v", refErr)
		}
		checkDoc(t, nd)
		got := mustMarshal(t, nd)
		if w := mustMarshal(t, want); !bytes.Equal(got, w) {
			t.Fatalf("result differs from reference:\n got %s\nwant %s", got, w)
		}
		if nd.Size() > lim.MaxBytes || nd.root.depth > lim.MaxDepth {
			t.Fatalf("result exceeds limits: %d bytes, depth %d", nd.Size(), nd.root.depth)
		}
		re, err := NewDoc(got, lim)
		if err != nil {
			t.Fatalf("result does not re-parse: %v", err)
		}
		if b := mustMarshal(t, re); !bytes.Equal(b, got) {
			t.Fatalf("re-parsed result differs:\n%s\n%s", got, b)
		}
	})
}
