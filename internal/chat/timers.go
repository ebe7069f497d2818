package chat

import (
	"container/heap"
	"sync"
	"time"
)

// Timers is a set of deadlines keyed by K, kept in a min-heap and served by
// one goroutine (Run) with one time.Timer, however many keys there are:
// typing indicators and presence grace periods use it instead of a timer or
// goroutine per user.
//
// A key is "held" from Set until Delete, or until it expires and is then
// Settled. Between expiry and Settle the key is out of the heap but still
// held, so that a Set in that window (a renewal racing the expiry) revives it
// and makes the pending Settle report false: the caller then does not act on
// an expiry that was overtaken. Run's fire callback must call Settle (or
// Delete) for every key it is given.
type Timers[K comparable] struct {
	mu    sync.Mutex
	items map[K]*timerItem[K]
	h     timerHeap[K]
	wake  chan struct{}
}

type timerItem[K comparable] struct {
	key      K
	deadline time.Time
	index    int // position in the heap; -1 once expired, waiting for Settle
}

// NewTimers returns an empty set.
func NewTimers[K comparable]() *Timers[K] {
	return &Timers[K]{items: make(map[K]*timerItem[K]), wake: make(chan struct{}, 1)}
}

// Set schedules k at deadline, replacing its previous deadline. added
// reports whether k was not held before (neither scheduled nor expired and
// waiting for Settle).
func (t *Timers[K]) Set(k K, deadline time.Time) (added bool) {
	t.mu.Lock()
	it, ok := t.items[k]
	switch {
	case !ok:
		it = &timerItem[K]{key: k, deadline: deadline}
		t.items[k] = it
		heap.Push(&t.h, it)
		added = true
	case it.index < 0: // expired, not settled: revive
		it.deadline = deadline
		heap.Push(&t.h, it)
	default:
		it.deadline = deadline
		heap.Fix(&t.h, it.index)
	}
	first := t.h[0] == it
	t.mu.Unlock()
	if first {
		t.signal()
	}
	return added
}

// Delete forgets k, scheduled or expired; it reports whether k was held.
func (t *Timers[K]) Delete(k K) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	it, ok := t.items[k]
	if !ok {
		return false
	}
	delete(t.items, k)
	if it.index >= 0 {
		heap.Remove(&t.h, it.index)
	}
	return true
}

// Has reports whether k is held.
func (t *Timers[K]) Has(k K) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.items[k]
	return ok
}

// Len is the number of held keys.
func (t *Timers[K]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.items)
}

// Next returns the earliest scheduled deadline.
func (t *Timers[K]) Next() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.h) == 0 {
		return time.Time{}, false
	}
	return t.h[0].deadline, true
}

// Expire takes every key whose deadline is at or before now out of the heap
// and returns them, earliest first. They stay held until Settle or Delete.
func (t *Timers[K]) Expire(now time.Time) []K {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []K
	for len(t.h) > 0 && !t.h[0].deadline.After(now) {
		it := heap.Pop(&t.h).(*timerItem[K])
		out = append(out, it.key)
	}
	return out
}

// Settle forgets k if it expired and was not Set again since; it reports
// whether it did, that is whether the caller should act on the expiry.
func (t *Timers[K]) Settle(k K) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	it, ok := t.items[k]
	if !ok || it.index >= 0 {
		return false
	}
	delete(t.items, k)
	return true
}

func (t *Timers[K]) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Run calls fire for every key as it expires, on the calling goroutine,
// until stop is closed. fire must Settle or Delete the key.
func (t *Timers[K]) Run(stop <-chan struct{}, fire func(K)) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var due <-chan time.Time
		if next, ok := t.Next(); ok {
			d := time.Until(next)
			if d <= 0 {
				for _, k := range t.Expire(time.Now()) {
					fire(k)
				}
				select {
				case <-stop:
					return
				default:
				}
				continue
			}
			timer.Reset(d)
			due = timer.C
		}
		select {
		case <-stop:
			return
		case <-t.wake:
		case <-due:
		}
		timer.Stop()
		for _, k := range t.Expire(time.Now()) {
			fire(k)
		}
	}
}

// timerHeap orders items by deadline (container/heap).
type timerHeap[K comparable] []*timerItem[K]

func (h timerHeap[K]) Len() int           { return len(h) }
func (h timerHeap[K]) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h timerHeap[K]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *timerHeap[K]) Push(x any) {
	it := x.(*timerItem[K])
	it.index = len(*h)
	*h = append(*h, it)
}

func (h *timerHeap[K]) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*h = old[:n-1]
	return it
}
