package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// peer is one benchmark client in a room: a connection, its reader
// goroutine and the reader's private counters (flushed to the shared ones
// in batches so a million deliveries a second do not fight over one cache
// line).
type peer struct {
	idx  int
	room string
	c    *wsConn
	rr   *roomRun

	hist *Hist // delivery latency (reader-owned)
	ack  *Hist // request→reply latency (reader-owned)
	next []int64

	// reader-local, flushed to rr
	delivered  int64
	drops      int64
	frames     int64
	lastRecv   int64
	superseded int64 // presence: values a batch skipped (coalesced away)
	presFrames int64 // presence: room:presence_updated + room:presence_batch frames
	batches    int64 // presence: room:presence_batch frames

	sent  atomic.Int64 // requests sent by this peer
	acked atomic.Int64 // replies received

	joined    chan struct{}
	joinOnce  sync.Once
	done      chan struct{}
	dead      atomic.Bool // reader ended
	lost      atomic.Bool // ended before the run stopped (a disconnect)
	writeFail atomic.Bool
}

// roomRun is the state shared by the peers of one scenario run.
type roomRun struct {
	c        *common
	peers    []*peer
	senders  int // how many peers send (sizes peer.next)
	stopping atomic.Bool

	delivered   atomic.Int64
	drops       atomic.Int64
	frames      atomic.Int64
	superseded  atomic.Int64
	presFrames  atomic.Int64
	batches     atomic.Int64
	errors      atomic.Int64
	disconnects atomic.Int64
	errCodes    codeCounts
	closeCodes  codeCounts
	failReasons codeCounts
	connFails   atomic.Int64

	// onFrame handles one server message (any type but connected); now is
	// the receive time in unix ns.
	onFrame func(p *peer, frame []byte, now int64)
}

func (rr *roomRun) flush(p *peer) {
	if p.delivered != 0 {
		rr.delivered.Add(p.delivered)
		p.delivered = 0
	}
	if p.drops != 0 {
		rr.drops.Add(p.drops)
		p.drops = 0
	}
	if p.frames != 0 {
		rr.frames.Add(p.frames)
		p.frames = 0
	}
	if p.superseded != 0 {
		rr.superseded.Add(p.superseded)
		p.superseded = 0
	}
	if p.presFrames != 0 {
		rr.presFrames.Add(p.presFrames)
		p.presFrames = 0
	}
	if p.batches != 0 {
		rr.batches.Add(p.batches)
		p.batches = 0
	}
}

func (rr *roomRun) readLoop(p *peer) {
	defer close(p.done)
	unflushed := 0
	for {
		if unflushed >= 256 || (unflushed > 0 && !p.c.buffered()) {
			rr.flush(p)
			unflushed = 0
		}
		frame, err := p.c.next()
		if err != nil {
			rr.flush(p)
			p.dead.Store(true)
			if !rr.stopping.Load() {
				p.lost.Store(true)
				rr.disconnects.Add(1)
				code := "eof"
				if errors.Is(err, errClosedByServer) {
					code = strconv.Itoa(p.c.closeCode)
				}
				rr.closeCodes.add(code, 1)
			}
			return
		}
		now := time.Now().UnixNano()
		unflushed++
		p.frames++
		switch {
		case bytes.HasPrefix(frame, pfxRoomState):
			p.joinOnce.Do(func() { close(p.joined) })
			continue
		case bytes.HasPrefix(frame, pfxError):
			rr.errors.Add(1)
			rr.errCodes.add(errorCode(frame), 1)
			if id := frameID(frame); len(id) > 0 && id[0] == 'j' {
				// the join itself failed
				p.joinOnce.Do(func() { close(p.joined) })
			}
		}
		rr.onFrame(p, frame, now)
	}
}

// connectPeers opens n connections (user ids <prefix><i>), starts their
// readers and joins each to roomOf(i). It fails when a connection or a join
// fails: room benchmarks need every member.
func (rr *roomRun) connectPeers(ctx context.Context, n int, prefix string, roomOf func(i int) string, readBuf int) error {
	c := rr.c
	rr.peers = make([]*peer, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			p := &peer{idx: i, room: roomOf(i), rr: rr, hist: NewHist(), ack: NewHist(), next: make([]int64, rr.senders),
				joined: make(chan struct{}), done: make(chan struct{})}
			err := func() error {
				tok, err := c.token(fmt.Sprintf("%s%d", prefix, i))
				if err != nil {
					return err
				}
				dctx, cancel := context.WithTimeout(ctx, c.connTimeout)
				defer cancel()
				p.c, err = dialWS(dctx, c.dialOpts(i, readBuf), tok)
				if err != nil {
					return err
				}
				if err := p.c.readConnected(time.Now().Add(c.connTimeout)); err != nil {
					p.c.close()
					return err
				}
				return nil
			}()
			if err != nil {
				rr.connFails.Add(1)
				rr.failReasons.add(shortReason(err), 1)
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("connect %s%d: %w", prefix, i, err)
				}
				mu.Unlock()
				return
			}
			rr.peers[i] = p
			go rr.readLoop(p)
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		rr.closeAll()
		return firstErr
	}
	if ctx.Err() != nil {
		rr.closeAll()
		return ctx.Err()
	}
	// Join one at a time per room would be slow; join all, then wait.
	// Against several servers (a cluster), or with --first-join-alone,
	// member 0 joins first, alone: the node that takes a room's lease is
	// the first to ask for it, so this makes the first URL's node the
	// owner of the room(s) of member 0 instead of whichever node wins the
	// race, and the room is loaded before the other joins arrive.
	first := 0
	if c.joinFirst && len(rr.peers) > 0 {
		p := rr.peers[0]
		msg := fmt.Sprintf(`{"type":"room:join","id":"j%d","data":{"room_id":%q}}`, p.idx, p.room)
		if err := p.c.writeText([]byte(msg)); err != nil {
			rr.closeAll()
			return fmt.Errorf("join: %w", err)
		}
		select {
		case <-p.joined:
		case <-p.done:
			rr.closeAll()
			return fmt.Errorf("peer 0 disconnected while joining (close code %d)", p.c.closeCode)
		case <-time.After(3 * c.connTimeout):
			rr.closeAll()
			return errors.New("timed out waiting for member 0's room:state")
		case <-ctx.Done():
			rr.closeAll()
			return ctx.Err()
		}
		first = 1
	}
	for _, p := range rr.peers[first:] {
		msg := fmt.Sprintf(`{"type":"room:join","id":"j%d","data":{"room_id":%q}}`, p.idx, p.room)
		if err := p.c.writeText([]byte(msg)); err != nil {
			rr.closeAll()
			return fmt.Errorf("join: %w", err)
		}
	}
	deadline := time.After(3*c.connTimeout + time.Duration(n)*10*time.Millisecond)
	for _, p := range rr.peers {
		select {
		case <-p.joined:
		case <-p.done:
			rr.closeAll()
			return fmt.Errorf("peer %d disconnected while joining (close code %d)", p.idx, p.c.closeCode)
		case <-deadline:
			rr.closeAll()
			return errors.New("timed out waiting for room:state replies")
		case <-ctx.Done():
			rr.closeAll()
			return ctx.Err()
		}
	}
	if e := rr.errors.Load(); e > 0 {
		rr.closeAll()
		return fmt.Errorf("%d joins failed: %s", e, fmtCounts(rr.errCodes.snapshot()))
	}
	return nil
}

// settle waits until no peer has received anything for quiet (the
// room:joined storm after n joins), at most max.
func (rr *roomRun) settle(quiet, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	last := rr.frames.Load()
	for time.Now().Before(deadline) {
		time.Sleep(quiet)
		cur := rr.frames.Load()
		if cur == last {
			return
		}
		last = cur
	}
}

func (rr *roomRun) closeAll() {
	rr.stopping.Store(true)
	for _, p := range rr.peers {
		if p != nil && p.c != nil {
			p.c.closeGracefully()
		}
	}
	for _, p := range rr.peers {
		if p != nil && p.c != nil {
			<-p.done
		}
	}
}

// mergeHists merges the peers' histograms (after their readers ended).
func (rr *roomRun) mergeHists() (deliv, ack *Hist) {
	deliv, ack = NewHist(), NewHist()
	for _, p := range rr.peers {
		if p != nil {
			deliv.Merge(p.hist)
			ack.Merge(p.ack)
		}
	}
	return deliv, ack
}

func (rr *roomRun) lastRecv() int64 {
	var t int64
	for _, p := range rr.peers {
		if p != nil && p.lastRecv > t {
			t = p.lastRecv
		}
	}
	return t
}

func (rr *roomRun) fillCommon(r *Result) {
	r.Connected = len(rr.peers)
	r.ConnectFailures = int(rr.connFails.Load())
	r.Drops = rr.drops.Load()
	r.Errors = rr.errors.Load()
	r.ErrorCodes = rr.errCodes.snapshot()
	r.Disconnects = rr.disconnects.Load()
	r.CloseCodes = rr.closeCodes.snapshot()
}

// markSeq records sequence seq from sender pub at p: a jump counts the
// skipped messages as drops.
func (p *peer) markSeq(pub, seq int64) {
	if pub < 0 || int(pub) >= len(p.next) {
		return
	}
	exp := p.next[pub]
	if seq > exp {
		p.drops += seq - exp
	}
	if seq >= exp {
		p.next[pub] = seq + 1
	}
}

// markLatest records sequence seq from sender pub at p when values may be
// coalesced (room:presence_batch carries only each sender's latest): a
// jump counts the skipped values as superseded, not as drops.
func (p *peer) markLatest(pub, seq int64) {
	if pub < 0 || int(pub) >= len(p.next) {
		return
	}
	if exp := p.next[pub]; seq > exp {
		p.superseded += seq - exp
	}
	if seq >= p.next[pub] {
		p.next[pub] = seq + 1
	}
}

// parseMarks finds the bench marks {"bts":N,"bseq":N,"bpub":N} in a frame.
// It tries the order the bench writes first (one scan), then any order.
func parseMarks(frame []byte) (ts, seq, pub int64, ok bool) {
	i := bytes.Index(frame, keyTS)
	if i < 0 {
		return 0, 0, 0, false
	}
	rest := frame[i+len(keyTS):]
	n := numLen(rest)
	if ts, ok = parseInt(rest[:n]); !ok {
		return
	}
	rest = rest[n:]
	if bytes.HasPrefix(rest, []byte(`,"bseq":`)) {
		rest = rest[8:]
		n = numLen(rest)
		seq, _ = parseInt(rest[:n])
		rest = rest[n:]
		if bytes.HasPrefix(rest, []byte(`,"bpub":`)) {
			pub, _ = parseInt(rest[8:])
			return ts, seq, pub, true
		}
	}
	seq, _ = intAfter(frame, keySeq)
	pub, _ = intAfter(frame, keyPub)
	return ts, seq, pub, true
}

func numLen(p []byte) int {
	i := 0
	for i < len(p) && (p[i] == '-' || (p[i] >= '0' && p[i] <= '9')) {
		i++
	}
	return i
}

func shortReason(err error) string {
	s := err.Error()
	switch {
	case bytes.Contains([]byte(s), []byte("cannot assign requested address")):
		return "EADDRNOTAVAIL (source ports exhausted)"
	case bytes.Contains([]byte(s), []byte("too many open files")):
		return "EMFILE (open files limit)"
	case bytes.Contains([]byte(s), []byte("connection refused")):
		return "ECONNREFUSED"
	case bytes.Contains([]byte(s), []byte("connection reset")):
		return "ECONNRESET"
	case bytes.Contains([]byte(s), []byte("timeout")), bytes.Contains([]byte(s), []byte("deadline exceeded")):
		return "timeout"
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
