package jsonpatch

import (
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
)

// Internal value representation inside a Doc:
//
//	nil, bool, string, json.Number   scalars, stored as is
//	*longString                      strings of longStringLen bytes or more
//	*object, *array                  containers
//
// Containers are immutable once the batch that created them has finished.
// Each container and each chunk records the generation (gen) of the batch
// that allocated it; a batch may write only to memory carrying its own gen.
// Generation 0 (NewDoc, test values) is never writable. The invariant
// "a writable container sits in a writable chunk of a writable parent" holds
// throughout a batch, so a non-writable container never has writable
// descendants.

// Chunk geometry (variables only so that tests can use tiny chunks).
var (
	maxChunk  = 128              // a chunk is split when it grows beyond this
	fillChunk = maxChunk * 3 / 4 // chunk length used when building containers
	minChunk  = maxChunk / 4     // a chunk shorter than this is merged with a neighbour if they fit in fillChunk
)

var genCounter atomic.Uint64

func nextGen() uint64 { return genCounter.Add(1) }

// longStringLen is the length from which strings are stored with their
// encoded size cached, so that removing, moving or copying them is O(1)
// rather than a rescan of the whole string.
const longStringLen = 64

type longString struct {
	s    string
	size int // stringSize(s)
}

func newString(s string) any {
	if len(s) < longStringLen {
		return s
	}
	return &longString{s, stringSize(s)}
}

type member struct {
	key string
	val any
}

type elem struct{ val any }

func (m member) value() any          { return m.val }
func (m member) with(v any) member   { return member{m.key, v} }
func (e elem) value() any            { return e.val }
func (e elem) with(v any) elem       { return elem{v} }
func (m member) cmpKey(k string) int { return strings.Compare(m.key, k) }

type entry[E any] interface {
	member | elem
	value() any
	with(v any) E
}

type chunk[E entry[E]] struct {
	gen   uint64 // batch that allocated items
	depth int    // max depthOf over items
	items []E
}

// seq is a chunked sequence: the concatenation of its chunks' items. No
// chunk is empty.
type seq[E entry[E]] struct {
	gen    uint64 // batch that allocated this container and its chunks slice
	size   int    // exact encoded size in bytes
	depth  int    // 1 + max depth of the items
	n      int    // number of items
	chunks []chunk[E]
}

type object struct{ seq[member] }

type array struct{ seq[elem] }

func sizeOf(v any) int {
	switch x := v.(type) {
	case nil:
		return 4
	case bool:
		if x {
			return 4
		}
		return 5
	case string:
		return stringSize(x)
	case *longString:
		return x.size
	case json.Number:
		if x == "" {
			return 1
		}
		return len(x)
	case *object:
		return x.size
	case *array:
		return x.size
	}
	panic("jsonpatch: internal value of unexpected type")
}

func depthOf(v any) int {
	switch x := v.(type) {
	case *object:
		return x.depth
	case *array:
		return x.depth
	}
	return 0
}

func isContainer(v any) bool {
	switch v.(type) {
	case *object, *array:
		return true
	}
	return false
}

// makeSeq builds a sequence of the given items, which it takes ownership of.
func makeSeq[E entry[E]](items []E, gen uint64) seq[E] {
	s := seq[E]{gen: gen, n: len(items), depth: 1}
	if len(items) == 0 {
		return s
	}
	s.chunks = make([]chunk[E], 0, (len(items)+fillChunk-1)/fillChunk)
	for len(items) > 0 {
		k := min(len(items), fillChunk)
		ch := chunk[E]{gen: gen, items: items[:k:k]}
		ch.depth = itemsDepth(ch.items)
		s.depth = max(s.depth, ch.depth+1)
		s.chunks = append(s.chunks, ch)
		items = items[k:]
	}
	return s
}

func itemsDepth[E entry[E]](items []E) int {
	d := 0
	for _, it := range items {
		d = max(d, depthOf(it.value()))
	}
	return d
}

// shallow returns a writable copy of s for batch gen. The chunks slice is
// copied; the chunks' items stay shared until written.
func (s *seq[E]) shallow(gen uint64) seq[E] {
	c := *s
	c.gen = gen
	c.chunks = make([]chunk[E], len(s.chunks), len(s.chunks)+1)
	copy(c.chunks, s.chunks)
	return c
}

func (s *seq[E]) redepth() {
	d := 0
	for i := range s.chunks {
		d = max(d, s.chunks[i].depth)
	}
	s.depth = d + 1
}

// changed updates the cached depths after the item at chunk ci changed from
// depth oldD to newD (-1: no item, i.e. insertion or removal).
func (s *seq[E]) changed(ci, oldD, newD int) {
	ch := &s.chunks[ci]
	prev := ch.depth
	if newD >= ch.depth {
		ch.depth = newD
	} else if oldD == ch.depth {
		ch.depth = itemsDepth(ch.items)
	}
	if ch.depth+1 > s.depth {
		s.depth = ch.depth + 1
	} else if ch.depth < prev && prev+1 == s.depth {
		s.redepth()
	}
}

// ownChunk makes chunk ci's items writable by batch gen. s must be writable.
func (s *seq[E]) ownChunk(gen uint64, ci int) *chunk[E] {
	ch := &s.chunks[ci]
	if ch.gen != gen {
		items := make([]E, len(ch.items), len(ch.items)+1)
		copy(items, ch.items)
		ch.items = items
		ch.gen = gen
	}
	return ch
}

func (s *seq[E]) at(ci, off int) E { return s.chunks[ci].items[off] }

// insertAt inserts e before item off of chunk ci (off may equal the chunk's
// length). On an empty sequence ci and off must be 0.
func (s *seq[E]) insertAt(gen uint64, ci, off int, e E) {
	d := depthOf(e.value())
	s.n++
	if len(s.chunks) == 0 {
		items := make([]E, 1, 4)
		items[0] = e
		s.chunks = append(s.chunks, chunk[E]{gen: gen, depth: d, items: items})
		s.depth = d + 1
		return
	}
	ch := s.ownChunk(gen, ci)
	ch.items = slices.Insert(ch.items, off, e)
	if len(ch.items) <= maxChunk {
		s.changed(ci, -1, d)
		return
	}
	// Split the chunk in two halves.
	h := len(ch.items) / 2
	right := make([]E, len(ch.items)-h, maxChunk/2+8)
	copy(right, ch.items[h:])
	clear(ch.items[h:])
	ch.items = ch.items[:h]
	ch.depth = itemsDepth(ch.items)
	s.chunks = slices.Insert(s.chunks, ci+1, chunk[E]{gen: gen, depth: itemsDepth(right), items: right})
	s.redepth()
}

// removeAt removes and returns item off of chunk ci.
func (s *seq[E]) removeAt(gen uint64, ci, off int) E {
	ch := s.ownChunk(gen, ci)
	old := ch.items[off]
	ch.items = slices.Delete(ch.items, off, off+1)
	s.n--
	switch {
	case len(ch.items) == 0:
		s.chunks = slices.Delete(s.chunks, ci, ci+1)
		s.redepth()
	case len(ch.items) < minChunk && len(s.chunks) > 1:
		s.merge(gen, ci)
		s.redepth()
	default:
		s.changed(ci, depthOf(old.value()), -1)
	}
	return old
}

// merge joins short chunk ci with a neighbour if the result stays within
// fillChunk items.
func (s *seq[E]) merge(gen uint64, ci int) {
	lo := ci
	if ci+1 == len(s.chunks) {
		lo = ci - 1
	}
	a, b := s.chunks[lo].items, s.chunks[lo+1].items
	if len(a)+len(b) > fillChunk {
		s.chunks[ci].depth = itemsDepth(s.chunks[ci].items)
		return
	}
	items := make([]E, 0, len(a)+len(b)+1)
	items = append(append(items, a...), b...)
	s.chunks[lo] = chunk[E]{gen: gen, depth: itemsDepth(items), items: items}
	s.chunks = slices.Delete(s.chunks, lo+1, lo+2)
}

// setAt replaces item off of chunk ci and returns the old item.
func (s *seq[E]) setAt(gen uint64, ci, off int, e E) E {
	ch := s.ownChunk(gen, ci)
	old := ch.items[off]
	ch.items[off] = e
	s.changed(ci, depthOf(old.value()), depthOf(e.value()))
	return old
}

// childChanged records that the container at chunk ci, item off (of depth
// oldD) was replaced by nv, which may be the same, modified-in-place,
// container.
func (s *seq[E]) childChanged(gen uint64, ci, off int, nv any, oldD int) {
	if s.chunks[ci].items[off].value() != nv {
		s.setAt(gen, ci, off, s.chunks[ci].items[off].with(nv))
		return
	}
	s.changed(ci, oldD, depthOf(nv))
}

// find locates key: the chunk and offset where it is or would be inserted.
func (o *object) find(key string) (ci, off int, found bool) {
	if len(o.chunks) == 0 {
		return 0, 0, false
	}
	// ci: the last chunk whose first key <= key (or 0).
	lo, hi := 1, len(o.chunks)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if o.chunks[m].items[0].key <= key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	ci = lo - 1
	off, found = slices.BinarySearchFunc(o.chunks[ci].items, key, member.cmpKey)
	return ci, off, found
}

// locate maps array index i (0 <= i <= n) to a chunk and offset; i == n is
// the position after the last item.
func (a *array) locate(i int) (ci, off int) {
	if len(a.chunks) == 0 {
		return 0, 0
	}
	if i == a.n {
		ci = len(a.chunks) - 1
		return ci, len(a.chunks[ci].items)
	}
	if i < a.n/2 {
		for ci = 0; ; ci++ {
			if l := len(a.chunks[ci].items); i < l {
				return ci, i
			} else {
				i -= l
			}
		}
	}
	back := a.n - i // 1 <= back <= n
	for ci = len(a.chunks) - 1; ; ci-- {
		if l := len(a.chunks[ci].items); back <= l {
			return ci, l - back
		} else {
			back -= l
		}
	}
}

// own returns o itself if batch gen may write it, else a writable copy.
func (o *object) own(gen uint64) *object {
	if o.gen == gen {
		return o
	}
	return &object{o.shallow(gen)}
}

func (a *array) own(gen uint64) *array {
	if a.gen == gen {
		return a
	}
	return &array{a.shallow(gen)}
}

func newObject(gen uint64) *object {
	return &object{seq[member]{gen: gen, size: 2, depth: 1}}
}
