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
)

// runPresence: C clients in one room, each sending room:update_presence
// {"bts","bseq","bpub"} at --rate per client. Everyone in the room, the
// sender included, receives room:presence_updated, so deliveries =
// updates × C; latency is measured from the timestamp inside the presence.
//
// A large room on a server with presence-coalesce sends the others one
// room:presence_batch per interval instead, holding each sender's latest
// presence (the sender still gets its room:presence_updated reply, and
// its own entry in the batch). Every entry of a batch is a delivery, with
// its latency from the entry's bts; values a batch skipped because a newer
// one replaced them are "superseded", not drops, and what must hold at the
// end is that every client has every sender's last value. --coalesce says
// the room is meant to be large: it needs C above --large-room-members.
func runPresence(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommon("presence", stdout, stderr, 10*time.Second)
	clients := c.fs.Int("clients", 100, "clients in the room (each sends and receives)")
	rate := c.fs.Float64("rate", 20, "presence updates per second per client")
	drain := c.fs.Duration("drain", 3*time.Second, "after --duration, wait this long at most for deliveries in flight")
	readBuf := c.fs.Int("read-buffer", 16<<10, "client read buffer per connection, bytes")
	coalesce := c.fs.Bool("coalesce", false, "the room is large (needs --clients above --large-room-members), so a server with presence-coalesce sends room:presence_batch; reports presence frames/s beside deliveries/s")
	largeMembers := c.fs.Int("large-room-members", 100, "the server's --large-room-members (with --coalesce)")
	if code := c.parse(args); code >= 0 {
		return code
	}
	if *clients < 1 || *rate <= 0 {
		fmt.Fprintln(stderr, "parley bench presence: need --clients >= 1 and --rate > 0")
		return 2
	}
	if *coalesce && *clients <= *largeMembers {
		fmt.Fprintf(stderr, "parley bench presence: --coalesce needs a large room: --clients above --large-room-members (%d)\n", *largeMembers)
		return 2
	}
	C := *clients
	rr := &roomRun{c: c, senders: C}
	res := &Result{Scenario: "presence", Params: map[string]any{"clients": C, "rate_per_client": *rate,
		"duration": c.duration.String(), "url": c.url, "room": c.room, "coalesce": *coalesce}}
	rr.onFrame = func(p *peer, frame []byte, now int64) {
		switch {
		case bytes.HasPrefix(frame, pfxPresenceUpdated):
			p.presFrames++
			ts, seq, pub, ok := parseMarks(frame)
			if !ok {
				return
			}
			p.hist.Record(now - ts)
			p.markSeq(pub, seq)
			p.delivered++
			p.lastRecv = now
			if len(frameID(frame)) > 0 {
				p.acked.Add(1)
				p.ack.Record(now - ts)
			}
		case bytes.HasPrefix(frame, pfxPresenceBatch):
			p.presFrames++
			p.batches++
			p.lastRecv = now
			// {"updates":[{"client_id":..,"user_id":..,"presence":{marks},"timestamp":..},...]}:
			// the bench's presence is flat, so each object ends at its first '}'.
			rest := frame
			for {
				i := bytes.Index(rest, keyPresenceObj)
				if i < 0 {
					break
				}
				rest = rest[i+len(keyPresenceObj)-1:]
				j := bytes.IndexByte(rest, '}')
				if j < 0 {
					break
				}
				ts, seq, pub, ok := parseMarks(rest[:j+1])
				rest = rest[j+1:]
				if !ok {
					continue
				}
				p.hist.Record(now - ts)
				p.markLatest(pub, seq)
				p.delivered++
			}
		}
	}
	c.progressf("connecting %d clients to room %s", C, c.room)
	if err := rr.connectPeers(ctx, C, "bench-pres-", func(int) string { return c.room }, *readBuf); err != nil {
		fmt.Fprintf(stderr, "parley bench presence: %v\n", err)
		return 1
	}
	rr.settle(300*time.Millisecond, 30*time.Second)
	rr.delivered.Store(0)
	rr.drops.Store(0)
	rr.superseded.Store(0)
	rr.presFrames.Store(0)
	rr.batches.Store(0)

	var sentTotal atomic.Int64
	sent := make([]int64, C)
	before := c.sampleServer()
	start := time.Now()
	stopAt := start.Add(c.duration)
	interval := time.Duration(float64(time.Second) / *rate)
	var wg sync.WaitGroup
	for i := 0; i < C; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := rr.peers[i]
			offset := time.Duration(int64(interval) * int64(i) / int64(C)) // spread the clients over one interval
			roomJSON := strconv.Quote(p.room)
			var msg []byte
			var k int64
			for ; ; k++ {
				at := start.Add(offset + time.Duration(k)*interval)
				if !at.Before(stopAt) || ctx.Err() != nil || p.dead.Load() {
					break
				}
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				msg = append(msg[:0], `{"type":"room:update_presence","id":"p`...)
				msg = strconv.AppendInt(msg, k, 10)
				msg = append(msg, `","data":{"room_id":`...)
				msg = append(msg, roomJSON...)
				msg = append(msg, `,"presence":{"bts":`...)
				msg = strconv.AppendInt(msg, at.UnixNano(), 10)
				msg = append(msg, `,"bseq":`...)
				msg = strconv.AppendInt(msg, k, 10)
				msg = append(msg, `,"bpub":`...)
				msg = strconv.AppendInt(msg, int64(i), 10)
				msg = append(msg, `}}}`...)
				if err := p.c.writeText(msg); err != nil {
					break
				}
				p.sent.Add(1)
				sentTotal.Add(1)
			}
			sent[i] = k
		}(i)
	}
	stopProgress := make(chan struct{})
	go func() {
		var lastD, lastS, lastF int64
		every(ctx, stopProgress, func(el time.Duration) {
			d, s, f := rr.delivered.Load(), sentTotal.Load(), rr.presFrames.Load()
			c.progressf("t=%2.0fs updates %d/s delivered %d/s frames %d/s errors %d disconnects %d drops %d",
				el.Seconds(), s-lastS, d-lastD, f-lastF, rr.errors.Load(), rr.disconnects.Load(), rr.drops.Load())
			lastD, lastS, lastF = d, s, f
		})
	}()
	wg.Wait()
	sendEnd := time.Now()
	expected := sentTotal.Load() * int64(C)
	drainEnd := time.Now().Add(*drain)
	// Without batches every update reaches every client: wait for all of
	// them. With batches (coalesced) the count is unknown in advance: wait
	// until nothing has arrived for a while (the last batch goes out one
	// interval after the last update).
	lastFrames, quietSince := rr.frames.Load(), time.Now()
	for time.Now().Before(drainEnd) && rr.disconnects.Load() == 0 {
		if rr.batches.Load() == 0 && rr.delivered.Load() >= expected {
			break
		}
		time.Sleep(10 * time.Millisecond)
		if f := rr.frames.Load(); f != lastFrames {
			lastFrames, quietSince = f, time.Now()
		} else if rr.batches.Load() > 0 && time.Since(quietSince) >= 500*time.Millisecond {
			break
		}
	}
	after := c.sampleServer()
	close(stopProgress)
	rr.closeAll()

	var tail int64
	for _, p := range rr.peers {
		if p.lost.Load() {
			continue
		}
		for pub := 0; pub < C; pub++ {
			if miss := sent[pub] - p.next[pub]; miss > 0 {
				tail += miss
			}
		}
	}
	deliv, ack := rr.mergeHists()
	rr.fillCommon(res)
	res.Undelivered = tail
	res.Sent = sentTotal.Load()
	sendSecs := sendEnd.Sub(start).Seconds()
	res.SentPerSec = round1(float64(res.Sent) / sendSecs)
	for _, p := range rr.peers {
		res.Acked += p.acked.Load()
	}
	res.AckedPerSec = round1(float64(res.Acked) / sendSecs)
	res.AckLatency = ack.Summarize()
	res.Delivered = rr.delivered.Load()
	res.DeliveredPerSec = round1(float64(res.Delivered) / sendSecs)
	res.PresenceFrames = rr.presFrames.Load()
	res.PresenceFramesPerSec = round1(float64(res.PresenceFrames) / sendSecs)
	if b := rr.batches.Load(); b > 0 {
		// Coalesced: how many deliveries there are depends on the batches;
		// what must hold is that every client has every sender's last
		// value (Undelivered counts the values it is behind by).
		res.PresenceBatches = b
		res.Superseded = rr.superseded.Load()
	} else {
		res.Expected = expected
	}
	res.ElapsedS = round1(sendSecs*100) / 100
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
	c.nodeResults(res, rr, before, after, sendSecs)
	res.computeErrorRate()
	return res.finish(c)
}
