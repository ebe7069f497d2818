// Package jsonpatch applies RFC 6902 JSON Patch batches to room storage
// documents.
//
// A room document is a JSON object held in an immutable Doc. Apply never
// modifies its input: it copies only the containers along the paths a batch
// touches and shares everything else with the input (copy-on-write with
// structural sharing), so a batch that fails at any operation leaves the
// caller's Doc exactly as it was.
//
// Internally every object and array is a two-level "chunked" sequence
// (object members are kept sorted by key, in encoding/json's order), so
// changing one member of an object with ten thousand keys copies one small
// chunk and the chunk index, not the whole object. Within a batch the
// containers created by that batch are mutated in place. Every container
// caches its exact encoded size and nesting depth, which makes Doc.Size and
// the MaxBytes/MaxDepth checks O(1) per batch.
//
// Numbers are kept as json.Number (their literal text), re-encoded verbatim,
// and compared by exact decimal value in the test operation.
package jsonpatch

import (
	"errors"
	"fmt"
	"math"
)

// Errors returned by this package are wrapped around one of these sentinels
// with a message naming the operation index and path; use errors.Is.
// Messages carry the op, its paths and the configured limits, never a
// value read from the document (no contents, sizes, lengths or depths):
// they reach clients that may write without reading (PROTOCOL.md v1.1 §4).
var (
	// ErrInvalid reports a malformed patch or document, or an operation that
	// cannot be applied (path not found, index out of range, ...).
	ErrInvalid = errors.New("invalid")
	// ErrTestFailed reports a test operation whose comparison did not hold.
	ErrTestFailed = errors.New("test failed")
	// ErrTooLarge reports that a Limits bound was exceeded.
	ErrTooLarge = errors.New("limit exceeded")
)

// Limits bounds patches and documents. A zero field means unlimited.
//
// Depth counts container nesting: a scalar has depth 0, {} and [] have
// depth 1, {"a":[1]} has depth 2.
type Limits struct {
	MaxOps   int // operations per batch
	MaxDepth int // nesting depth of a document (and of an operation's value)
	MaxBytes int // encoded size of a document in bytes (Doc.Size)
	// RejectInvalidText makes ParseOps refuse (ErrInvalid) a patch whose
	// text is not valid Unicode: invalid UTF-8 bytes, or a \u escape of an
	// unpaired surrogate (RFC 8259 §8.2). Without it such strings decode to
	// U+FFFD, so the document would differ from the patch text that was
	// relayed. Off (the zero value) for replaying data stored before.
	RejectInvalidText bool
	// RejectDuplicateNames makes ParseOps refuse (ErrInvalid) a patch in
	// which an object, at any depth (an operation or inside its value),
	// has two members of the same name: decoders disagree on which one
	// counts (RFC 8259 §4, RFC 7493 §2.3), so the stored document could
	// differ from what a client makes of the relayed patch. Off for
	// replaying data stored before.
	RejectDuplicateNames bool
}

// hardMaxSize bounds the (virtual) size of a document even without MaxBytes,
// so that repeated copy operations cannot overflow the size counter.
const hardMaxSize = math.MaxInt / 4

// Op is one parsed operation.
type Op struct {
	Op    string // add, remove, replace, move, copy, test
	Path  string // JSON Pointer (RFC 6901); "" is the whole document
	From  string // source pointer for move and copy
	Value any    // value for add, replace and test: nil, bool, string, json.Number, map[string]any, []any

	// Parsed Path and From, valid while Path == pathSrc and From == fromSrc
	// (ParseOps fills them; Apply re-parses if the fields were changed or
	// the Op was built by hand).
	path, from       []string
	pathSrc, fromSrc string
	parsed           bool
}

func (op *Op) pathTokens() ([]string, error) {
	if op.parsed && op.pathSrc == op.Path {
		return op.path, nil
	}
	return parsePointer(op.Path)
}

func (op *Op) fromTokens() ([]string, error) {
	if op.parsed && op.fromSrc == op.From && op.from != nil {
		return op.from, nil
	}
	return parsePointer(op.From)
}

// opError wraps err with the index, name and path of the failing operation.
func opError(i int, op *Op, err error) error {
	if op.Op == "" && op.Path == "" {
		return fmt.Errorf("jsonpatch: op %d: %w", i, err)
	}
	return fmt.Errorf("jsonpatch: op %d (%s %q): %w", i, op.Op, op.Path, err)
}

// errorf returns an error wrapping kind with a formatted detail.
func errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}
