package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// runFanout: one room, S subscribers and P publishers; publishers send
// room:broadcast events carrying {"bts": send time ns, "bseq", "bpub"} and
// padding to --size bytes. Every other member receives each event, so
// deliveries = events × (members − 1).
func runFanout(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommon("fanout", stdout, stderr, 10*time.Second)
	subs := c.fs.Int("subscribers", 1000, "subscribers (members that only receive)")
	pubs := c.fs.Int("publishers", 1, "publishers (members that also send)")
	size := c.fs.Int("size", 100, "bytes of each event object (the JSON value of data.event)")
	rate := c.fs.Float64("rate", 0, "events per second, all publishers together (0 = as fast as --window allows)")
	window := c.fs.Int64("window", 1000, "most events in flight (sent but not yet delivered to every member)")
	drain := c.fs.Duration("drain", 3*time.Second, "after --duration, wait this long at most for deliveries in flight")
	readBuf := c.fs.Int("read-buffer", 32<<10, "client read buffer per connection, bytes")
	if code := c.parse(args); code >= 0 {
		return code
	}
	if *subs < 0 || *pubs < 1 || *subs+*pubs < 2 || *size < 0 || *window < 1 || *rate < 0 {
		fmt.Fprintln(stderr, "parley bench fanout: need --publishers >= 1, at least 2 members, --window >= 1, --rate >= 0")
		return 2
	}
	P, M := *pubs, *subs+*pubs
	rr := &roomRun{c: c, senders: P}
	res := &Result{Scenario: "fanout", Params: map[string]any{"subscribers": *subs, "publishers": P, "size": *size,
		"rate": *rate, "window": *window, "duration": c.duration.String(), "url": c.url, "room": c.room}}

	rr.onFrame = func(p *peer, frame []byte, now int64) {
		switch {
		case bytes.HasPrefix(frame, pfxRoomEvent):
			ts, seq, pub, ok := parseMarks(frame)
			if !ok {
				return
			}
			p.hist.Record(now - ts)
			p.markSeq(pub, seq)
			p.delivered++
			p.lastRecv = now
		case bytes.HasPrefix(frame, pfxAck):
			p.acked.Add(1)
		}
	}

	c.progressf("connecting %d members (%d publishers) to room %s", M, P, c.room)
	t0 := time.Now()
	if err := rr.connectPeers(ctx, M, "bench-fan-", func(int) string { return c.room }, *readBuf); err != nil {
		fmt.Fprintf(stderr, "parley bench fanout: %v\n", err)
		return 1
	}
	c.progressf("%d members joined in %.1fs; waiting for the join notifications to settle", M, time.Since(t0).Seconds())
	rr.settle(300*time.Millisecond, 30*time.Second)
	// Only deliveries of events count from here.
	rr.delivered.Store(0)
	rr.drops.Store(0)

	var sentTotal atomic.Int64
	pubSent := make([]int64, P) // final sequence count per publisher
	before := c.sampleServer()
	start := time.Now()
	stopAt := start.Add(c.duration)
	var wg sync.WaitGroup
	for i := 0; i < P; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			pubSent[i] = publishEvents(ctx, rr, rr.peers[i], i, *size, *rate/float64(P), *window, int64(M-1), &sentTotal, start, stopAt)
		}(i)
	}
	stopProgress := make(chan struct{})
	go func() {
		var lastD, lastS int64
		every(ctx, stopProgress, func(el time.Duration) {
			d, s := rr.delivered.Load(), sentTotal.Load()
			c.progressf("t=%2.0fs sent %d/s delivered %d/s in-flight %d errors %d disconnects %d drops %d",
				el.Seconds(), s-lastS, d-lastD, s-d/int64(M-1), rr.errors.Load(), rr.disconnects.Load(), rr.drops.Load())
			lastD, lastS = d, s
		})
	}()
	wg.Wait()
	sendEnd := time.Now()
	expected := sentTotal.Load() * int64(M-1)
	drainEnd := time.Now().Add(*drain)
	// An interrupt stops the sending, not the accounting: drain anyway.
	for rr.delivered.Load() < expected && time.Now().Before(drainEnd) {
		if live := countLive(rr); live < M {
			// dead members never catch up: stop waiting once the others did
			if rr.delivered.Load() >= sentTotal.Load()*int64(live-1) {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	after := c.sampleServer()
	close(stopProgress)
	rr.closeAll()

	// Undelivered: what a live member had not received from each
	// publisher by the end of the drain.
	var tail int64
	for _, p := range rr.peers {
		if p.lost.Load() {
			continue // counted as a disconnect
		}
		for pub := 0; pub < P; pub++ {
			if pub == p.idx {
				continue
			}
			if miss := pubSent[pub] - p.next[pub]; miss > 0 {
				tail += miss
			}
		}
	}
	deliv, _ := rr.mergeHists()
	rr.fillCommon(res)
	res.Undelivered = tail
	res.Sent = sentTotal.Load()
	sendSecs := sendEnd.Sub(start).Seconds()
	res.SentPerSec = round1(float64(res.Sent) / sendSecs)
	var acked int64
	for _, p := range rr.peers[:P] {
		acked += p.acked.Load()
	}
	res.Acked = acked
	res.AckedPerSec = round1(float64(acked) / sendSecs)
	res.Expected = expected
	res.Delivered = rr.delivered.Load()
	span := sendSecs
	if lr := rr.lastRecv(); lr > 0 {
		span = float64(lr-start.UnixNano()) / 1e9
	}
	res.DeliveredPerSec = round1(float64(res.Delivered) / span)
	res.ElapsedS = round1(span*100) / 100
	res.Latency = deliv.Summarize()
	if u := c.usage(before, after); u != nil {
		if res.Delivered > 0 {
			u.CPUNsPerDelivery = round1(u.CPUSeconds * 1e9 / float64(res.Delivered))
			if u.WriteSyscalls > 0 {
				u.DeliveriesPerWrite = math.Round(float64(res.Delivered)/float64(u.WriteSyscalls)*100) / 100
			}
		}
		if res.Sent > 0 {
			u.CPUNsPerOp = round1(u.CPUSeconds * 1e9 / float64(res.Sent))
		}
		res.Server = u
	}
	c.nodeResults(res, rr, before, after, span)
	res.computeErrorRate()
	return res.finish(c)
}

func countLive(rr *roomRun) int {
	n := 0
	for _, p := range rr.peers {
		if !p.dead.Load() {
			n++
		}
	}
	return n
}

// publishEvents sends events until stopAt and returns how many it sent.
// perSec 0 = unpaced; the send is bounded by the in-flight window either
// way. The timestamp is the intended send time when paced (so a client
// that falls behind shows up as latency, not as a lower rate), else now.
func publishEvents(ctx context.Context, rr *roomRun, p *peer, pubIdx, size int, perSec float64, window, others int64,
	sentTotal *atomic.Int64, start, stopAt time.Time) int64 {
	var seq int64
	buf := make([]byte, 0, 64<<10)
	msg := make([]byte, 0, size+256)
	pad := bytes.Repeat([]byte("x"), size)
	roomJSON := strconv.Quote(p.room)
	startNs := start.UnixNano()
	for ctx.Err() == nil && !p.dead.Load() {
		now := time.Now()
		if !now.Before(stopAt) {
			break
		}
		allow := window - (sentTotal.Load() - rr.delivered.Load()/others)
		if a := window - (p.sent.Load() - p.acked.Load()); a < allow {
			allow = a
		}
		if allow > 256 {
			allow = 256
		}
		n := allow
		if perSec > 0 {
			due := int64(float64(now.Sub(start))/1e9*perSec) + 1 - seq
			if due <= 0 {
				next := start.Add(time.Duration(float64(seq) / perSec * 1e9))
				time.Sleep(time.Until(next))
				continue
			}
			if due < n {
				n = due
			}
		}
		if n <= 0 {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		buf = buf[:0]
		nowNs := now.UnixNano()
		for k := int64(0); k < n; k++ {
			ts := nowNs
			if perSec > 0 {
				ts = startNs + int64(float64(seq)/perSec*1e9)
			}
			msg = append(msg[:0], `{"type":"room:broadcast","id":"b`...)
			msg = strconv.AppendInt(msg, seq, 10)
			msg = append(msg, `","data":{"room_id":`...)
			msg = append(msg, roomJSON...)
			msg = append(msg, `,"event":`...)
			evStart := len(msg)
			msg = append(msg, `{"bts":`...)
			msg = strconv.AppendInt(msg, ts, 10)
			msg = append(msg, `,"bseq":`...)
			msg = strconv.AppendInt(msg, seq, 10)
			msg = append(msg, `,"bpub":`...)
			msg = strconv.AppendInt(msg, int64(pubIdx), 10)
			msg = append(msg, `,"pad":"`...)
			if padN := size - (len(msg) - evStart) - 2; padN > 0 {
				msg = append(msg, pad[:padN]...)
			}
			msg = append(msg, `"}}}`...)
			buf = appendFrame(buf, ws.OpText, msg)
			seq++
		}
		if err := p.c.writeRaw(buf); err != nil {
			p.writeFail.Store(true)
			return seq - n
		}
		p.sent.Add(n)
		sentTotal.Add(n)
	}
	return seq
}
