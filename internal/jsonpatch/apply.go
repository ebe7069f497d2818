package jsonpatch

import (
	"fmt"
	"slices"
)

// Apply applies ops in order to d and returns the new document.
//
// d itself is never modified: only the containers along touched paths are
// copied (at most once per batch; containers created by this batch are then
// changed in place), so on any error the caller still holds the unchanged
// d, which Apply also returns. The result's Size is maintained
// incrementally and always equals len(json.Marshal(result.Value())).
//
// More than lim.MaxOps operations, or a result larger than lim.MaxBytes or
// deeper than lim.MaxDepth, is ErrTooLarge. The limits are checked on the
// result (in O(1), from cached sizes), so a batch may pass through a larger
// intermediate state; copies share structure, so that costs no memory. The
// root must stay a JSON object: removing it, or replacing it with a
// non-object, is ErrInvalid.
//
// Op values of Go types other than those ParseOps produces (float64, int,
// structs, ...) are normalised through encoding/json.
func Apply(d Doc, ops []Op, lim Limits) (Doc, error) {
	if lim.MaxOps > 0 && len(ops) > lim.MaxOps {
		return d, fmt.Errorf("jsonpatch: %w", errorf(ErrTooLarge, "%d operations exceeds %d", len(ops), lim.MaxOps))
	}
	a := applier{gen: nextGen(), root: d.root}
	if a.root == nil {
		a.root = newObject(0)
	}
	for i := range ops {
		op := &ops[i]
		if err := a.apply(op); err != nil {
			return d, opError(i, op, err)
		}
		if a.root.size > hardMaxSize {
			return d, opError(i, op, errorf(ErrTooLarge, "document grows beyond %d bytes", hardMaxSize))
		}
	}
	if lim.MaxBytes > 0 && a.root.size > lim.MaxBytes {
		return d, fmt.Errorf("jsonpatch: %w", errorf(ErrTooLarge, "resulting document larger than %d bytes", lim.MaxBytes))
	}
	if lim.MaxDepth > 0 && a.root.depth > lim.MaxDepth {
		return d, fmt.Errorf("jsonpatch: %w", errorf(ErrTooLarge, "resulting document nested deeper than %d", lim.MaxDepth))
	}
	return Doc{root: a.root}, nil
}

type applier struct {
	gen  uint64  // containers with this gen were created by this batch
	root *object // current root, possibly writable
}

type editKind uint8

const (
	editAdd editKind = iota
	editRemove
	editReplace
)

func (a *applier) apply(op *Op) error {
	path, err := op.pathTokens()
	if err != nil {
		return err
	}
	switch op.Op {
	case "add", "replace":
		v, err := fromPlain(op.Value, a.gen)
		if err != nil {
			return err
		}
		kind := editAdd
		if op.Op == "replace" {
			kind = editReplace
		}
		return a.put(path, kind, v)
	case "remove":
		if len(path) == 0 {
			return errorf(ErrInvalid, "cannot remove the document root")
		}
		root, _, err := a.edit(a.root, path, editRemove, nil)
		if err != nil {
			return err
		}
		a.root = root.(*object)
		return nil
	case "move":
		from, err := op.fromTokens()
		if err != nil {
			return err
		}
		if isProperPrefix(from, path) {
			return errorf(ErrInvalid, "cannot move %q into its own child", op.From)
		}
		if slices.Equal(from, path) {
			// Same location: a no-op once the source is known to exist.
			if _, err := a.get(from); err != nil {
				return fmt.Errorf("from %q: %w", op.From, err)
			}
			return nil
		}
		root, v, err := a.edit(a.root, from, editRemove, nil)
		if err != nil {
			return fmt.Errorf("from %q: %w", op.From, err)
		}
		a.root = root.(*object)
		return a.put(path, editAdd, v)
	case "copy":
		from, err := op.fromTokens()
		if err != nil {
			return err
		}
		v, err := a.get(from)
		if err != nil {
			return fmt.Errorf("from %q: %w", op.From, err)
		}
		if a.writable(v) {
			// v now gets a second parent, so nothing this batch created may
			// be written in place any more: move to a fresh generation.
			a.gen = nextGen()
		}
		return a.put(path, editAdd, v)
	case "test":
		v, err := a.get(path)
		if err != nil {
			return err
		}
		want, err := fromPlain(op.Value, 0)
		if err != nil {
			return err
		}
		if !equal(v, want) {
			return errorf(ErrTestFailed, "value differs")
		}
		return nil
	}
	return errorf(ErrInvalid, "unknown op %q", op.Op)
}

func (a *applier) writable(v any) bool {
	switch x := v.(type) {
	case *object:
		return x.gen == a.gen
	case *array:
		return x.gen == a.gen
	}
	return false
}

// put adds (kind editAdd) or replaces (editReplace) the value at path.
func (a *applier) put(path []string, kind editKind, v any) error {
	if len(path) == 0 {
		o, ok := v.(*object)
		if !ok {
			return errorf(ErrInvalid, "the document root must be an object")
		}
		a.root = o
		return nil
	}
	root, _, err := a.edit(a.root, path, kind, v)
	if err != nil {
		return err
	}
	a.root = root.(*object)
	return nil
}

// get returns the value at path.
func (a *applier) get(path []string) (any, error) {
	var cur any = a.root
	for depth, tok := range path {
		switch x := cur.(type) {
		case *object:
			ci, off, found := x.find(tok)
			if !found {
				return nil, errorf(ErrInvalid, "path not found: no member %q", tok)
			}
			cur = x.at(ci, off).val
		case *array:
			i, err := parseIndex(tok, x.n, false)
			if err != nil {
				return nil, err
			}
			cur = x.at(x.locate(i)).val
		default:
			return nil, errorf(ErrInvalid, "path not found: %q is not a container", pointerPrefix(path, depth))
		}
	}
	return cur, nil
}

// edit applies kind at path below container c and returns c's replacement
// (c itself if it was writable) and the removed or replaced value.
func (a *applier) edit(c any, path []string, kind editKind, v any) (nc, old any, err error) {
	tok := path[0]
	switch x := c.(type) {
	case *object:
		if len(path) == 1 {
			o := x.own(a.gen)
			old, err := a.editObject(o, tok, kind, v)
			return o, old, err
		}
		ci, off, found := x.find(tok)
		if !found {
			return nil, nil, errorf(ErrInvalid, "path not found: no member %q", tok)
		}
		child := x.at(ci, off).val
		if !isContainer(child) {
			return nil, nil, errorf(ErrInvalid, "path not found: member %q is not a container", tok)
		}
		oldSize, oldDepth := sizeOf(child), depthOf(child)
		nchild, old, err := a.edit(child, path[1:], kind, v)
		if err != nil {
			return nil, nil, err
		}
		o := x.own(a.gen)
		o.size += sizeOf(nchild) - oldSize
		o.childChanged(a.gen, ci, off, nchild, oldDepth)
		return o, old, nil
	case *array:
		if len(path) == 1 {
			arr := x.own(a.gen)
			old, err := a.editArray(arr, tok, kind, v)
			return arr, old, err
		}
		i, err := parseIndex(tok, x.n, false)
		if err != nil {
			return nil, nil, err
		}
		ci, off := x.locate(i)
		child := x.at(ci, off).val
		if !isContainer(child) {
			return nil, nil, errorf(ErrInvalid, "path not found: element %d is not a container", i)
		}
		oldSize, oldDepth := sizeOf(child), depthOf(child)
		nchild, old, err := a.edit(child, path[1:], kind, v)
		if err != nil {
			return nil, nil, err
		}
		arr := x.own(a.gen)
		arr.size += sizeOf(nchild) - oldSize
		arr.childChanged(a.gen, ci, off, nchild, oldDepth)
		return arr, old, nil
	}
	panic("jsonpatch: edit of a non-container")
}

func (a *applier) editObject(o *object, key string, kind editKind, v any) (old any, err error) {
	ci, off, found := o.find(key)
	switch kind {
	case editRemove:
		if !found {
			return nil, errorf(ErrInvalid, "path not found: no member %q", key)
		}
		old = o.removeAt(a.gen, ci, off).val
		o.size -= stringSize(key) + 1 + sizeOf(old)
		if o.n > 0 {
			o.size-- // the comma that separated it
		}
		return old, nil
	case editReplace:
		if !found {
			return nil, errorf(ErrInvalid, "path not found: no member %q", key)
		}
	}
	if found {
		old = o.setAt(a.gen, ci, off, member{key, v}).val
		o.size += sizeOf(v) - sizeOf(old)
		return old, nil
	}
	o.size += stringSize(key) + 1 + sizeOf(v)
	if o.n > 0 {
		o.size++
	}
	o.insertAt(a.gen, ci, off, member{key, v})
	return nil, nil
}

func (a *applier) editArray(arr *array, tok string, kind editKind, v any) (old any, err error) {
	i, err := parseIndex(tok, arr.n, kind == editAdd)
	if err != nil {
		return nil, err
	}
	ci, off := arr.locate(i)
	switch kind {
	case editRemove:
		old = arr.removeAt(a.gen, ci, off).val
		arr.size -= sizeOf(old)
		if arr.n > 0 {
			arr.size--
		}
		return old, nil
	case editReplace:
		old = arr.setAt(a.gen, ci, off, elem{v}).val
		arr.size += sizeOf(v) - sizeOf(old)
		return old, nil
	}
	arr.size += sizeOf(v)
	if arr.n > 0 {
		arr.size++
	}
	arr.insertAt(a.gen, ci, off, elem{v})
	return nil, nil
}

// pointerPrefix re-encodes the first n tokens of path, for messages.
func pointerPrefix(path []string, n int) string {
	var b []byte
	for _, t := range path[:n] {
		b = append(b, '/')
		for i := 0; i < len(t); i++ {
			switch t[i] {
			case '~':
				b = append(b, '~', '0')
			case '/':
				b = append(b, '~', '1')
			default:
				b = append(b, t[i])
			}
		}
	}
	return string(b)
}
