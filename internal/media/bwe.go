package media

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/pion/rtcp"
)

// Bandwidth estimate and layer allocation of one recv transport (one
// receiver), so that a receiver on a poor link gets lower layers without
// affecting anyone else.
//
// Estimate (update, every allocPeriod): every video packet sent to the
// receiver carries a transport-wide sequence number; the receiver's
// transport-cc feedback says which arrived. Over each period:
//
//   - loss > 10 %: estimate × (1 − loss/2), but not below 0.85 × the
//     delivered rate (bytes of the packets that arrived, per second: what
//     the link carried); ignored in the first 2 s after the receiver's
//     first feedback (browsers report the first packets of a new receive
//     stream lost while they set it up);
//   - loss < 2 %: estimate × 1.08, at most 4 × delivered rate + 500 kbit/s
//     (so that it can probe one layer up but not run away while idle);
//   - otherwise: unchanged.
//
// A period with fewer than 20 packets reported is extended (up to 2 s).
//
// It starts at 2 Mbit/s with the first feedback. A receiver that sends
// REMB and no transport-cc gets its REMB value; one that sends neither is
// not limited. No delay-based estimation and no probing: going up is tried
// by switching up (see below) and undone by the loss that follows.
//
// Allocation (allocate, every period and on every consume or
// set_preferred_layers): each video consumer of the transport has a ladder
// of options (spatial, temporal) up to its preferred layers, over the
// producer's layers that had media within 1.5 s, spatial then temporal,
// leaving out an option that would cost no more than the one below it. Every consumer starts on its lowest option; then, in
// consumer order, each moves one step up while the step's extra rate fits
// in what is left of the estimate (× 1.15 for a step above its current
// target: hysteresis), until nothing moves. Going down is immediate;
// going up waits a dwell time since the consumer's last change (2 s,
// doubled up to 60 s each time a step up is undone within 4 s, i.e. by
// the loss it caused). A new spatial target asks the producer for a key
// frame of that layer; the forwarder switches on it (forwarder.go).
type bwe struct {
	log *sentLog // recv transports only (newTransport)

	mu          sync.Mutex
	recvBytes   uint64 // this period
	recvPkts    int
	lostPkts    int
	highest     uint16 // highest transport-wide seq reported so far
	haveHighest bool
	twccAt      int64 // last transport-cc feedback (mono ns)
	firstFb     int64 // first one
	rembBps     float64
	rembAt      int64
	est         float64 // bit/s; 0: no feedback yet (not limited)
	lastEval    int64
	loss, rate  float64 // last period, for tests and logs
}

// sentLog remembers the packets sent to a receiver by transport-wide
// sequence number, until its feedback says what arrived.
type sentLog struct {
	sent     [sentLogSize]atomic.Uint64 // seq<<48 | size<<32 | ms
	lostMark [sentLogSize]uint32        // under bwe.mu: 1<<16 | seq when counted lost (a later report may say it arrived)
}

const (
	sentLogSize     = 1 << 12
	allocPeriod     = int64(500e6)
	initialEstimate = 2e6
	minEstimate     = 50e3
	maxEstimate     = 100e6
	upHysteresis    = 1.15
	baseUpDelay     = int64(2e9)
	maxUpDelay      = int64(60e9)
	failedUpWithin  = int64(4e9)
	stableReset     = int64(30e9)
	minSamples      = 20
	maxSamplePeriod = int64(2e9)
	warmUp          = int64(2e9)
)

// sent records a packet written to the receiver (any goroutine).
func (b *bwe) sent(seq uint16, size int, now int64) {
	if b.log == nil {
		return
	}
	if size > 0xffff {
		size = 0xffff
	}
	b.log.sent[seq&(sentLogSize-1)].Store(uint64(seq)<<48 | uint64(size)<<32 | uint64(uint32(now/1e6)))
}

// feedback accounts one transport-cc feedback packet (RTCP read
// goroutine). Each sequence number counts once: by its first report, or as
// received when a later report says a packet counted lost arrived.
func (b *bwe) feedback(p *rtcp.TransportLayerCC) {
	if b.log == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.twccAt = monoNow()
	if b.firstFb == 0 {
		b.firstFb = b.twccAt
	}
	seq, n, idx := p.BaseSequenceNumber, int(p.PacketStatusCount), 0
	for _, chunk := range p.PacketChunks {
		switch ch := chunk.(type) {
		case *rtcp.RunLengthChunk:
			for i := 0; i < int(ch.RunLength) && idx < n; i++ {
				b.account(seq, ch.PacketStatusSymbol != rtcp.TypeTCCPacketNotReceived)
				seq++
				idx++
			}
		case *rtcp.StatusVectorChunk:
			for _, sym := range ch.SymbolList {
				if idx >= n {
					break
				}
				b.account(seq, sym != rtcp.TypeTCCPacketNotReceived)
				seq++
				idx++
			}
		}
	}
}

func (b *bwe) account(seq uint16, received bool) {
	i := seq & (sentLogSize - 1)
	v := b.log.sent[i].Load()
	if uint16(v>>48) != seq || v == 0 {
		return // not sent by us, or too old
	}
	if b.haveHighest && int16(seq-b.highest) <= 0 {
		// Reported before: only a late arrival of a packet counted lost counts.
		if received && b.log.lostMark[i] == 1<<16|uint32(seq) {
			b.log.lostMark[i] = 0
			b.lostPkts = max(b.lostPkts-1, 0)
			b.recvPkts++
			b.recvBytes += v >> 32 & 0xffff
		}
		return
	}
	b.highest, b.haveHighest = seq, true
	if received {
		b.recvPkts++
		b.recvBytes += v >> 32 & 0xffff
		b.log.lostMark[i] = 0
	} else {
		b.lostPkts++
		b.log.lostMark[i] = 1<<16 | uint32(seq)
	}
}

func (b *bwe) onREMB(bps float32) {
	b.mu.Lock()
	b.rembBps, b.rembAt = float64(bps), monoNow()
	b.mu.Unlock()
}

// update moves the estimate on from the period's feedback (b.mu held).
func (b *bwe) update(now int64) {
	if b.lastEval == 0 {
		b.lastEval = now
		b.recvBytes, b.recvPkts, b.lostPkts = 0, 0, 0
		return
	}
	n := b.recvPkts + b.lostPkts
	if n < minSamples && now-b.lastEval < maxSamplePeriod {
		return // a thin stream: gather over a longer period
	}
	dt := float64(now-b.lastEval) / 1e9
	b.lastEval = now
	switch {
	case b.twccAt != 0 && n >= 3:
		b.loss = float64(b.lostPkts) / float64(n)
		b.rate = float64(b.recvBytes) * 8 / dt
		if b.est == 0 {
			b.est = initialEstimate
		}
		switch {
		case b.loss > 0.10 && now-b.firstFb < warmUp:
			// A receive stream's first packets are often reported lost (the
			// browser's receiver was not ready for the first key frame burst).
		case b.loss > 0.10:
			b.est = max(b.est*(1-b.loss/2), 0.85*b.rate)
		case b.loss < 0.02:
			if c := 4*b.rate + 500e3; b.est < c {
				b.est = min(b.est*math.Pow(1.08, dt/(float64(allocPeriod)/1e9)), c)
			}
		}
		b.est = max(minEstimate, min(b.est, maxEstimate))
	case b.rembAt != 0 && now-b.rembAt < 2e9 && (b.twccAt == 0 || now-b.twccAt > 2e9):
		b.est = max(minEstimate, b.rembBps)
	}
	b.recvBytes, b.recvPkts, b.lostPkts = 0, 0, 0
}

// estimate returns the current estimate (0: not limited).
func (b *bwe) estimate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.est
}

// allocState is one consumer's allocation (guarded by its transport's bwe.mu).
type allocState struct {
	spatial, temporal int   // target given to the forwarder; -1: none yet
	changedAt         int64 // last change (mono ns); 0 lets the next step up go at once
	upAt              int64 // last step up
	upDelay           int64
}

// layerOption is one rung of a consumer's ladder.
type layerOption struct {
	spatial, temporal int
	rate              float64
}

// options lists a consumer's ladder: active layers up to its preferred
// ones, spatial then temporal, lowest first, with increasing measured rates.
func (c *consumer) options(now int64) []layerOption {
	p := c.p
	maxS := p.spatialLayers() - 1
	if c.prefSpatial >= 0 {
		maxS = min(maxS, c.prefSpatial)
	}
	var opts []layerOption
	for s := 0; s <= maxS; s++ {
		if !p.active(s, now) {
			continue
		}
		maxT := max(int(p.meterOf(s).maxTID.Load()), 0)
		if c.prefTemporal >= 0 {
			maxT = min(maxT, c.prefTemporal)
		}
		for t := 0; t <= maxT; t++ {
			opts = append(opts, layerOption{s, t, p.optionRate(s, t)})
		}
	}
	// Keep the ladder's rates increasing: an option that costs no more than
	// the one below it (a higher spatial layer's base temporal layer vs a
	// lower one's full rate) is left out, so that going down walks the
	// temporal layers of one spatial layer before switching spatial layers.
	out := opts[:0]
	for _, o := range opts {
		if len(out) > 0 && o.rate > 0 && o.rate <= out[len(out)-1].rate {
			continue
		}
		out = append(out, o)
	}
	return out
}

// allocate runs the estimate's period update when due (worker) and
// re-targets the transport's video consumers.
func (t *transport) allocate(now int64, periodic bool) {
	b := &t.bwe
	b.mu.Lock()
	defer b.mu.Unlock()
	if periodic {
		b.update(now)
	}
	type cand struct {
		c    *consumer
		opts []layerOption
		i    int
		cur  int // index of the current target in opts; -1
	}
	var cands []*cand
	for ssrc, c := range *t.consumers.Load() {
		if ssrc != c.ssrc || c.state() == streamClosed || c.p.kind != kindVideo {
			continue
		}
		opts := c.options(now)
		cur := -1
		for i, o := range opts {
			if o.spatial == c.alloc.spatial && o.temporal == c.alloc.temporal {
				cur = i
			}
		}
		if len(opts) == 0 {
			// Nothing flowing yet: aim at the preferred layers; the forwarder
			// starts on the first key frame of any layer up to them.
			s := c.p.spatialLayers() - 1
			if c.prefSpatial >= 0 {
				s = min(s, c.prefSpatial)
			}
			tl := maxTemporal - 1
			if c.prefTemporal >= 0 {
				tl = c.prefTemporal
			}
			c.alloc.spatial, c.alloc.temporal = -1, -1
			c.fmu.Lock()
			key := c.fwd.setTarget(s, tl, now)
			c.want.Store(c.fwd.wantMask())
			c.fmu.Unlock()
			if key >= 0 {
				c.p.requestKeyFrame(key, false)
			}
			continue
		}
		cands = append(cands, &cand{c: c, opts: opts, cur: cur})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].c.seq < cands[j].c.seq })
	budget := b.est
	limited := budget > 0
	for _, k := range cands {
		if !limited {
			k.i = len(k.opts) - 1
			continue
		}
		budget -= k.opts[0].rate
	}
	for moved := limited; moved; {
		moved = false
		for _, k := range cands {
			if k.i+1 >= len(k.opts) {
				continue
			}
			extra := k.opts[k.i+1].rate - k.opts[k.i].rate
			need := extra
			if k.i+1 > k.cur {
				a := &k.c.alloc
				if k.cur >= 0 && a.changedAt != 0 && now-a.changedAt < max(a.upDelay, baseUpDelay) {
					continue
				}
				need = extra * upHysteresis
			}
			if need <= budget {
				k.i++
				budget -= extra
				moved = true
			}
		}
	}
	for _, k := range cands {
		a := &k.c.alloc
		o := k.opts[k.i]
		if o.spatial != a.spatial || o.temporal != a.temporal {
			t.log.Debug("layers re-allocated", "consumer", k.c.id, "from", fmt.Sprintf("%d/%d", a.spatial, a.temporal),
				"to", fmt.Sprintf("%d/%d", o.spatial, o.temporal), "estimate", int(b.est), "loss", b.loss, "delivered", int(b.rate),
				"option_rate", int(o.rate), "preferred", fmt.Sprintf("%d/%d", k.c.prefSpatial, k.c.prefTemporal))
		}
		switch {
		case k.cur >= 0 && k.i < k.cur:
			if now-a.upAt < failedUpWithin {
				a.upDelay = min(max(a.upDelay, baseUpDelay)*2, maxUpDelay)
			}
		case k.i > k.cur:
			a.upAt = now
		case a.changedAt != 0 && now-a.changedAt > stableReset:
			a.upDelay = baseUpDelay
		}
		t.retarget(k.c, o.spatial, o.temporal, now)
	}
}

// retarget gives a consumer new target layers (bwe.mu held).
func (t *transport) retarget(c *consumer, spatial, temporal int, now int64) {
	a := &c.alloc
	if a.spatial == spatial && a.temporal == temporal {
		return
	}
	a.spatial, a.temporal, a.changedAt = spatial, temporal, now
	c.fmu.Lock()
	key := c.fwd.setTarget(spatial, temporal, now)
	c.want.Store(c.fwd.wantMask())
	c.fmu.Unlock()
	if key >= 0 {
		c.p.requestKeyFrame(key, false)
	}
}

// setPreferredLayers records a consumer's preferred layers (-1: highest)
// and re-allocates its transport at once.
func (c *consumer) setPreferredLayers(spatial, temporal int) {
	t := c.t
	t.bwe.mu.Lock()
	c.prefSpatial, c.prefTemporal = spatial, temporal
	c.alloc.changedAt = 0 // asked for: no dwell
	t.bwe.mu.Unlock()
	t.allocate(monoNow(), false)
}
