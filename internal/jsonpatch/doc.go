package jsonpatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Doc is an immutable JSON object with its exact encoded size cached. The
// zero Doc is the empty object {}. Docs may be shared freely between
// goroutines.
type Doc struct {
	root *object // nil means {}
}

// NewDoc parses raw, which must be exactly one JSON object. Numbers are
// kept as json.Number. Exceeding lim.MaxDepth or lim.MaxBytes (measured on
// the canonical encoding, i.e. Size) is ErrTooLarge.
func NewDoc(raw []byte, lim Limits) (Doc, error) {
	v, err := decodeJSON(raw)
	if err != nil {
		return Doc{}, fmt.Errorf("jsonpatch: document: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Doc{}, fmt.Errorf("jsonpatch: document: %w", errorf(ErrInvalid, "not a JSON object"))
	}
	if lim.MaxDepth > 0 && plainDepth(m, lim.MaxDepth) > lim.MaxDepth {
		return Doc{}, fmt.Errorf("jsonpatch: document: %w", errorf(ErrTooLarge, "nested deeper than %d", lim.MaxDepth))
	}
	cv, err := fromPlain(m, 0)
	if err != nil {
		return Doc{}, fmt.Errorf("jsonpatch: document: %w", err)
	}
	root := cv.(*object)
	if lim.MaxBytes > 0 && root.size > lim.MaxBytes {
		return Doc{}, fmt.Errorf("jsonpatch: document: %w", errorf(ErrTooLarge, "%d bytes exceeds %d", root.size, lim.MaxBytes))
	}
	return Doc{root: root}, nil
}

// Size returns the length of d's encoding, len(d.MarshalJSON()), in O(1).
func (d Doc) Size() int {
	if d.root == nil {
		return 2
	}
	return d.root.size
}

// MarshalJSON returns d's compact encoding, byte-identical to what a
// json.Encoder with SetEscapeHTML(false) produces for d.Value() (keys
// sorted, <, > and & kept as they are, numbers verbatim).
func (d Doc) MarshalJSON() ([]byte, error) {
	if d.root == nil {
		return []byte("{}"), nil
	}
	// The size is exact, but may be virtual for documents that share
	// subtrees heavily and have no MaxBytes, so cap the preallocation.
	return appendValue(make([]byte, 0, min(d.root.size, 64<<20)), d.root), nil
}

// Value returns a freshly built decoded form of d: map[string]any with
// values nil, bool, string, json.Number, map[string]any and []any. It costs
// O(document); callers own the result.
func (d Doc) Value() any {
	if d.root == nil {
		return map[string]any{}
	}
	return toPlain(d.root)
}

// ParseOps decodes a JSON array of operations. It is strict: the input must
// be an array of objects; "op" and "path" must be strings; move and copy
// need a string "from"; add, replace and test need a "value" (null is a
// value). Pointers must be valid RFC 6901 syntax. Unknown op names are
// ErrInvalid; more than lim.MaxOps operations, or a value nested deeper than
// lim.MaxDepth, is ErrTooLarge. Numbers decode as json.Number. See
// Limits for the stricter checks it can make.
func ParseOps(raw []byte, lim Limits) ([]Op, error) {
	// members[i] counts the object members in the text of operation i
	// (see strict.go); decoding must keep them all.
	var buf [16]int
	members := buf[:0]
	if lim.RejectInvalidText || lim.RejectDuplicateNames {
		var err error
		members, err = scanText(raw, lim.RejectInvalidText, lim.RejectDuplicateNames, members, lim.MaxOps, 2)
		if err != nil {
			return nil, fmt.Errorf("jsonpatch: %w", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("jsonpatch: %w", errorf(ErrInvalid, "malformed JSON: %v", err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("jsonpatch: %w", errorf(ErrInvalid, "patch is not a JSON array"))
	}
	var ops []Op
	for dec.More() {
		if lim.MaxOps > 0 && len(ops) >= lim.MaxOps {
			return nil, fmt.Errorf("jsonpatch: %w", errorf(ErrTooLarge, "more than %d operations", lim.MaxOps))
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("jsonpatch: op %d: %w", len(ops), errorf(ErrInvalid, "malformed JSON: %v", err))
		}
		op, err := parseOp(v, lim)
		if err != nil {
			return nil, opError(len(ops), &op, err)
		}
		if lim.RejectDuplicateNames && (len(ops) >= len(members) || plainMembers(v) != members[len(ops)]) {
			return nil, opError(len(ops), &op, errDuplicateName)
		}
		ops = append(ops, op)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
		return nil, fmt.Errorf("jsonpatch: %w", errorf(ErrInvalid, "malformed JSON array"))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("jsonpatch: %w", errorf(ErrInvalid, "data after the patch array"))
	}
	return ops, nil
}

func parseOp(v any, lim Limits) (Op, error) {
	var op Op
	m, ok := v.(map[string]any)
	if !ok {
		return op, errorf(ErrInvalid, "operation is not a JSON object")
	}
	if op.Op, ok = m["op"].(string); !ok {
		return op, errorf(ErrInvalid, `missing or non-string "op"`)
	}
	if op.Path, ok = m["path"].(string); !ok {
		return op, errorf(ErrInvalid, `missing or non-string "path"`)
	}
	var err error
	if op.path, err = parsePointer(op.Path); err != nil {
		return op, err
	}
	op.pathSrc = op.Path
	switch op.Op {
	case "add", "replace", "test":
		if op.Value, ok = m["value"]; !ok {
			return op, errorf(ErrInvalid, `missing "value"`)
		}
		if lim.MaxDepth > 0 && plainDepth(op.Value, lim.MaxDepth) > lim.MaxDepth {
			return op, errorf(ErrTooLarge, "value nested deeper than %d", lim.MaxDepth)
		}
	case "remove":
	case "move", "copy":
		if op.From, ok = m["from"].(string); !ok {
			return op, errorf(ErrInvalid, `missing or non-string "from"`)
		}
		if op.from, err = parsePointer(op.From); err != nil {
			return op, err
		}
		op.fromSrc = op.From
	default:
		return op, errorf(ErrInvalid, "unknown op %q", op.Op)
	}
	op.parsed = true
	return op, nil
}
