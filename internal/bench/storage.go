package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runStorage: W writers spread over R rooms, each keeping --inflight
// room:update_storage batches outstanding (one `add` of a counter at
// /k<writer>). The reply is the sender's room:storage_updated carrying the
// request id; it is sent only once the batch is durable, so ack latency is
// the commit latency seen by a client.
func runStorage(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommon("storage", stdout, stderr, 10*time.Second)
	writers := c.fs.Int("writers", 16, "writers (connections sending batches)")
	nrooms := c.fs.Int("rooms", 1, "rooms the writers are spread over (writer i → room i mod R)")
	inflight := c.fs.Int("inflight", 8, "batches each writer keeps outstanding")
	opsPer := c.fs.Int("ops", 1, "ops per batch")
	drain := c.fs.Duration("drain", 5*time.Second, "after --duration, wait this long at most for outstanding acks")
	readBuf := c.fs.Int("read-buffer", 16<<10, "client read buffer per connection, bytes")
	if code := c.parse(args); code >= 0 {
		return code
	}
	if *writers < 1 || *nrooms < 1 || *inflight < 1 || *opsPer < 1 {
		fmt.Fprintln(stderr, "parley bench storage: --writers, --rooms, --inflight and --ops must be >= 1")
		return 2
	}
	W, R := *writers, *nrooms
	roomOf := func(i int) string {
		if R == 1 {
			return c.room
		}
		return c.room + "-" + strconv.Itoa(i%R)
	}
	res := &Result{Scenario: "storage", Params: map[string]any{"writers": W, "rooms": R, "inflight": *inflight,
		"ops": *opsPer, "duration": c.duration.String(), "url": c.url, "room": c.room}}

	ring := 1
	for ring < 2**inflight {
		ring <<= 1
	}
	type writer struct {
		sentAt []atomic.Int64
		slots  chan struct{}
	}
	ws := make([]*writer, W)
	for i := range ws {
		ws[i] = &writer{sentAt: make([]atomic.Int64, ring), slots: make(chan struct{}, *inflight+1)}
	}
	var stopSending atomic.Bool
	rr := &roomRun{c: c}
	rr.onFrame = func(p *peer, frame []byte, now int64) {
		isUpd := bytes.HasPrefix(frame, pfxStorageUpdated)
		isErr := !isUpd && bytes.HasPrefix(frame, pfxError)
		if !isUpd && !isErr {
			return
		}
		id := frameID(frame)
		if len(id) < 2 || id[0] != 's' {
			if isUpd {
				p.delivered++ // another writer's batch in the same room
				p.lastRecv = now
			}
			return
		}
		n, ok := parseInt(id[1:])
		if !ok {
			return
		}
		w := ws[p.idx]
		if isUpd {
			p.ack.Record(now - w.sentAt[n&int64(ring-1)].Load())
			p.acked.Add(1)
			p.delivered++
			p.lastRecv = now
		}
		w.slots <- struct{}{}
	}
	c.progressf("connecting %d writers to %d room(s) %s", W, R, c.room)
	if err := rr.connectPeers(ctx, W, "bench-store-", roomOf, *readBuf); err != nil {
		fmt.Fprintf(stderr, "parley bench storage: %v\n", err)
		return 1
	}
	rr.settle(200*time.Millisecond, 10*time.Second)
	rr.delivered.Store(0)

	var sentTotal, ackedTotal atomic.Int64
	before := c.sampleServer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < W; i++ {
		for k := 0; k < *inflight; k++ {
			ws[i].slots <- struct{}{}
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p, w := rr.peers[i], ws[i]
			roomJSON := strconv.Quote(p.room)
			path := strconv.Quote("/k" + strconv.Itoa(i))
			var msg []byte
			for n := int64(0); ; n++ {
				select {
				case <-w.slots:
				case <-p.done:
					return
				case <-ctx.Done():
					return
				}
				if stopSending.Load() {
					return
				}
				msg = append(msg[:0], `{"type":"room:update_storage","id":"s`...)
				msg = strconv.AppendInt(msg, n, 10)
				msg = append(msg, `","data":{"room_id":`...)
				msg = append(msg, roomJSON...)
				msg = append(msg, `,"ops":[`...)
				for o := 0; o < *opsPer; o++ {
					if o > 0 {
						msg = append(msg, ',')
					}
					msg = append(msg, `{"op":"add","path":`...)
					msg = append(msg, path...)
					msg = append(msg, `,"value":`...)
					msg = strconv.AppendInt(msg, n, 10)
					msg = append(msg, '}')
				}
				msg = append(msg, `]}}`...)
				w.sentAt[n&int64(ring-1)].Store(time.Now().UnixNano())
				if err := p.c.writeText(msg); err != nil {
					return
				}
				p.sent.Add(1)
				sentTotal.Add(1)
			}
		}(i)
	}
	sumAcked := func() int64 {
		var a int64
		for _, p := range rr.peers {
			a += p.acked.Load()
		}
		return a
	}
	stopProgress := make(chan struct{})
	go func() {
		var lastA, lastS int64
		every(ctx, stopProgress, func(el time.Duration) {
			a, s := sumAcked(), sentTotal.Load()
			c.progressf("t=%2.0fs sent %d/s acked %d/s outstanding %d errors %d disconnects %d",
				el.Seconds(), s-lastS, a-lastA, s-a-rr.errors.Load(), rr.errors.Load(), rr.disconnects.Load())
			lastA, lastS = a, s
		})
	}()
	sleepCtx(ctx, c.duration)
	stopSending.Store(true)
	window := time.Since(start).Seconds()
	ackedInWindow := sumAcked()
	// Unblock writers waiting for a slot, then wait for outstanding acks.
	for _, w := range ws {
		select {
		case w.slots <- struct{}{}:
		default:
		}
	}
	wg.Wait()
	drainEnd := time.Now().Add(*drain)
	for sumAcked()+rr.errors.Load() < sentTotal.Load() && time.Now().Before(drainEnd) && rr.disconnects.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	after := c.sampleServer()
	close(stopProgress)
	rr.closeAll()
	ackedTotal.Store(sumAcked())

	deliv, ack := rr.mergeHists()
	_ = deliv
	rr.fillCommon(res)
	res.Sent = sentTotal.Load()
	res.SentPerSec = round1(float64(res.Sent) / window)
	res.Acked = ackedTotal.Load()
	res.AckedPerSec = round1(float64(ackedInWindow) / window)
	res.AckLatency = ack.Summarize()
	res.Delivered = rr.delivered.Load()
	res.DeliveredPerSec = round1(float64(res.Delivered) / window)
	res.ElapsedS = round1(window*100) / 100
	if lost := res.Sent - res.Acked - res.Errors; lost > 0 {
		res.Undelivered = lost // never answered
	}
	if u := c.usage(before, after); u != nil {
		if res.Acked > 0 {
			u.CPUNsPerOp = round1(u.CPUSeconds * 1e9 / float64(res.Acked))
		}
		res.Server = u
	}
	c.nodeResults(res, rr, before, after, window)
	res.computeErrorRate()
	return res.finish(c)
}
