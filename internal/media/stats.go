package media

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// Server-side statistics (media:get_stats, in mediasoup's stats shapes) and
// the counters behind the SFU metrics.
//
// Producers (inbound-rtp): every packet a producer reads goes through one
// hook, producer.observe, which keeps RFC 3550 receive statistics (appendix
// A.1 sequence accounting, A.8 interarrival jitter) and, for audio, sums
// the ssrc-audio-level header extension for the active speaker (speaker.go),
// under the producer's own stats lock. Consumers (outbound-rtp): loss,
// jitter and round-trip time come from the receiver's RTCP receiver reports
// (RFC 3550 6.4.2), the round trip from the LSR/DLSR of the sender reports
// the SFU forwarded to it. Bitrates and fraction lost per interval are
// sampled by the router's worker every second (periodic.go). Byte counts
// are RTP payload bytes.

// nodeCounters are the SFU-wide counters of the metrics (monotonic).
type nodeCounters struct {
	nacksReceived     atomic.Uint64 // consumer NACKs (RTCP packets) answered from the history
	nacksSent         atomic.Uint64 // NACKs sent to producers for gaps
	keyFramesReceived atomic.Uint64 // consumer PLI/FIR
	keyFramesSent     atomic.Uint64 // PLIs sent to producers (after the throttle)
	transportTimeouts atomic.Uint64 // transports closed after TransportTimeout
	idleCallsEnded    atomic.Uint64 // calls ended by CallIdleTimeout
	speakerChanges    atomic.Uint64 // media:active_speaker changes sent
}

// speechFloorDBov: audio levels at or below -speechFloorDBov dBov count as
// silence for the active speaker; louder packets count speechFloorDBov -
// level (0..speechFloorDBov).
const speechFloorDBov = 70

// producerCtl is a producer's statistics and audio level accumulators.
type producerCtl struct {
	levelID uint8  // the client's ssrc-audio-level extension id (0: none or video)
	clock   uint32 // codec clock rate

	mu     sync.Mutex          // observe (read goroutine) vs the worker and get_stats
	seq    [maxLayers]seqStats // per layer (simulcast: one RTP stream each)
	jitter float64             // RFC 3550 A.8, timestamp units, over all layers
	start  time.Time
	lvlSum uint32 // audio activity since the last speaker sample
	lvlN   uint32

	rtx   atomic.Uint64 // retransmissions (RTX) received
	nacks atomic.Uint64 // NACK packets sent to the client
	plis  atomic.Uint64 // PLIs sent to the client

	// Worker samples (router lock).
	lastBytes           uint64
	bitrate             uint64
	expPrior, recvPrior uint64
	fractionLost        uint8
	sampled             bool
	lastSampleAt        time.Time
}

// seqStats is one layer's RFC 3550 A.3 sequence accounting; the
// producer's loss and jitter sum (resp. blend) its layers.
type seqStats struct {
	started     bool
	baseSeq     uint16
	maxSeq      uint16
	cycles      uint64
	received    uint64
	lastTransit int64
}

// audioLevelID returns the client's id of the ssrc-audio-level extension
// in a produce's header extensions (0: not negotiated).
func audioLevelID(extURI map[uint8]string) uint8 {
	for id, uri := range extURI {
		if uri == extAudioLevel {
			return id
		}
	}
	return 0
}

// observe is the producer's receive hook: one call per packet read (after
// the RTX unwrap), see the top of this file.
func (p *producer) observe(pkt *rtp.Packet, li int, isRTX bool) {
	c := &p.ctl
	if isRTX {
		c.rtx.Add(1)
		return
	}
	if li < 0 || li >= maxLayers {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.start.IsZero() {
		c.start = now
	}
	l := &c.seq[li]
	seq := pkt.SequenceNumber
	if !l.started {
		l.started, l.baseSeq, l.maxSeq = true, seq, seq
		l.lastTransit = c.transit(now, pkt.Timestamp)
	} else {
		if d := seq - l.maxSeq; d != 0 && d < 0x8000 {
			if seq < l.maxSeq {
				l.cycles++
			}
			l.maxSeq = seq
		}
		tr := c.transit(now, pkt.Timestamp)
		d := float64(tr - l.lastTransit)
		l.lastTransit = tr
		c.jitter += (math.Abs(d) - c.jitter) / 16
	}
	l.received++
	if c.levelID != 0 {
		if ext := pkt.GetExtension(c.levelID); len(ext) > 0 {
			if v := speechFloorDBov - int(ext[0]&0x7f); v > 0 {
				c.lvlSum += uint32(v)
			}
			c.lvlN++
		}
	}
}

// transit is the RFC 3550 A.8 relative transit time in timestamp units.
func (c *producerCtl) transit(now time.Time, ts uint32) int64 {
	arrival := int64(float64(now.Sub(c.start)) * float64(c.clock) / float64(time.Second))
	return arrival - int64(ts)
}

// takeLevel returns the mean audio activity since the last call (0 when
// no packet carried the extension) and resets the accumulator.
func (c *producerCtl) takeLevel() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lvlN == 0 {
		return 0
	}
	v := float64(c.lvlSum) / float64(c.lvlN)
	c.lvlSum, c.lvlN = 0, 0
	return v
}

// expectedLocked is RFC 3550 A.3's expected packet count, summed over
// the layers.
func (c *producerCtl) expectedLocked() uint64 {
	var n uint64
	for i := range c.seq {
		if l := &c.seq[i]; l.started {
			n += l.cycles<<16 + uint64(l.maxSeq) - uint64(l.baseSeq) + 1
		}
	}
	return n
}

// receivedLocked is the media packet count seen by observe, summed over
// the layers.
func (c *producerCtl) receivedLocked() uint64 {
	var n uint64
	for i := range c.seq {
		n += c.seq[i].received
	}
	return n
}

// countNACK and countKeyFrameRequest are called where the producer's
// client is sent a NACK / a PLI.
func (p *producer) countNACK() {
	p.ctl.nacks.Add(1)
	if s := p.sfuOf(); s != nil {
		s.ctr.nacksSent.Add(1)
	}
}

func (p *producer) countKeyFrameRequest() {
	p.ctl.plis.Add(1)
	if s := p.sfuOf(); s != nil {
		s.ctr.keyFramesSent.Add(1)
	}
}

func (p *producer) sfuOf() *SFU {
	if p.t == nil {
		return nil
	}
	return p.t.sfu
}

// consumerCtl is a consumer's statistics, from the receiver's RTCP.
type consumerCtl struct {
	mu           sync.Mutex
	haveRR       bool
	packetsLost  int32
	fractionLost uint8
	jitter       uint32  // timestamp units
	rtt          float64 // ms, 0 until known
	srNTP        uint32  // middle 32 bits of the last SR forwarded
	srAt         time.Time

	nacks atomic.Uint64
	plis  atomic.Uint64
	firs  atomic.Uint64

	// Worker samples (router lock).
	lastBytes    uint64
	bitrate      uint64
	lastSampleAt time.Time
}

// noteSR records a sender report forwarded to the consumer (for the round
// trip time of its answer).
func (c *consumer) noteSR(ntp uint64) {
	c.ctl.mu.Lock()
	c.ctl.srNTP, c.ctl.srAt = uint32(ntp>>16), time.Now()
	c.ctl.mu.Unlock()
}

// onReceiverReport reads one report block about this consumer.
func (c *consumer) onReceiverReport(r *rtcp.ReceptionReport) {
	c.ctl.mu.Lock()
	defer c.ctl.mu.Unlock()
	c.ctl.haveRR = true
	c.ctl.packetsLost = int32(r.TotalLost<<8) >> 8 // 24-bit signed
	c.ctl.fractionLost = r.FractionLost
	c.ctl.jitter = r.Jitter
	if r.LastSenderReport != 0 && r.LastSenderReport == c.ctl.srNTP && !c.ctl.srAt.IsZero() {
		rtt := time.Since(c.ctl.srAt) - time.Duration(r.Delay)*time.Second/65536
		if rtt >= 0 {
			c.ctl.rtt = float64(rtt) / float64(time.Millisecond)
		}
	}
}

// onReceiverReports handles a receiver report read on a recv transport.
func (t *transport) onReceiverReports(rr *rtcp.ReceiverReport) {
	cs := *t.consumers.Load()
	for i := range rr.Reports {
		if c := cs[rr.Reports[i].SSRC]; c != nil && c.ssrc == rr.Reports[i].SSRC {
			c.onReceiverReport(&rr.Reports[i])
		}
	}
}

// countNACK and countKeyFrameRequest count a consumer's feedback (onRTCP).
func (c *consumer) countNACK() {
	c.ctl.nacks.Add(1)
	c.t.sfu.ctr.nacksReceived.Add(1)
}

func (c *consumer) countKeyFrameRequest(fir bool) {
	if fir {
		c.ctl.firs.Add(1)
	} else {
		c.ctl.plis.Add(1)
	}
	c.t.sfu.ctr.keyFramesReceived.Add(1)
}

// score is a 0-10 quality score from a fraction lost (x/256): 10 without
// loss, one point less per 2 % lost.
func score(fractionLost uint8) int {
	pct := float64(fractionLost) * 100 / 256
	return max(0, min(10, int(math.Round(10-pct/2))))
}

// sampleStatsLocked updates bitrates and per-interval loss (worker, every
// second, router lock held).
func (r *router) sampleStatsLocked(now time.Time) {
	for _, pr := range r.producers {
		c := &pr.ctl
		b := pr.bytes.Load()
		if !c.lastSampleAt.IsZero() {
			if dt := now.Sub(c.lastSampleAt).Seconds(); dt > 0 {
				c.bitrate = uint64(float64(b-c.lastBytes) * 8 / dt)
			}
		}
		c.lastBytes, c.lastSampleAt = b, now
		c.mu.Lock()
		exp, recv := c.expectedLocked(), c.receivedLocked()
		c.mu.Unlock()
		if c.sampled {
			de, dr := exp-c.expPrior, recv-c.recvPrior
			c.fractionLost = 0
			if de > 0 && dr < de {
				c.fractionLost = uint8(min(255, (de-dr)*256/de))
			}
		}
		c.expPrior, c.recvPrior, c.sampled = exp, recv, true
	}
	for _, p := range r.participants {
		for _, co := range p.consumers {
			c := &co.ctl
			b := co.bytes.Load()
			if !c.lastSampleAt.IsZero() {
				if dt := now.Sub(c.lastSampleAt).Seconds(); dt > 0 {
					c.bitrate = uint64(float64(b-c.lastBytes) * 8 / dt)
				}
			}
			c.lastBytes, c.lastSampleAt = b, now
		}
	}
}

// ---- media:get_stats ----

// IceSelectedTuple is mediasoup's TransportTuple of the selected pair.
type IceSelectedTuple struct {
	LocalIP    string `json:"localIp"`
	LocalPort  int    `json:"localPort"`
	RemoteIP   string `json:"remoteIp"`
	RemotePort int    `json:"remotePort"`
	Protocol   string `json:"protocol"`
}

// TransportStats is mediasoup's WebRtcTransportStat (type
// "webrtc-transport") reduced to what the SFU knows, plus direction, state
// and the ICE usernames of the current generation.
type TransportStats struct {
	Type                  string            `json:"type"`
	TransportID           string            `json:"transportId"`
	Timestamp             int64             `json:"timestamp"`
	Direction             string            `json:"direction"`
	State                 string            `json:"state"`
	IceRole               string            `json:"iceRole"`
	IceState              string            `json:"iceState"`
	DtlsState             string            `json:"dtlsState"`
	IceSelectedTuple      *IceSelectedTuple `json:"iceSelectedTuple,omitempty"`
	IceUsernameFragment   string            `json:"iceUsernameFragment"`
	IceRemoteUsernameFrag string            `json:"iceRemoteUsernameFragment"`
	BytesReceived         uint64            `json:"bytesReceived"`
	BytesSent             uint64            `json:"bytesSent"`
	RecvBitrate           uint64            `json:"recvBitrate"`
	SendBitrate           uint64            `json:"sendBitrate"`
	RtpPacketsReceived    uint64            `json:"rtpPacketsReceived"`
	RtpPacketsSent        uint64            `json:"rtpPacketsSent"`
	IceRestarts           int               `json:"iceRestarts"`
	DisconnectedForMs     int64             `json:"disconnectedForMs"`
}

// RtpStreamStats is mediasoup's RtpStreamRecvStats (type "inbound-rtp",
// a producer) or RtpStreamSendStats ("outbound-rtp", a consumer).
type RtpStreamStats struct {
	Type           string  `json:"type"`
	ProducerID     string  `json:"producerId"`
	ConsumerID     string  `json:"consumerId,omitempty"`
	Timestamp      int64   `json:"timestamp"`
	Ssrc           uint32  `json:"ssrc"`
	RtxSsrc        uint32  `json:"rtxSsrc,omitempty"`
	Kind           string  `json:"kind"`
	MimeType       string  `json:"mimeType"`
	PacketCount    uint64  `json:"packetCount"`
	ByteCount      uint64  `json:"byteCount"`
	Bitrate        uint64  `json:"bitrate"`
	PacketsLost    int64   `json:"packetsLost"`
	FractionLost   uint8   `json:"fractionLost"`
	Jitter         uint32  `json:"jitter"`
	RoundTripTime  float64 `json:"roundTripTime"`
	Score          int     `json:"score"`
	NackCount      uint64  `json:"nackCount"`
	PliCount       uint64  `json:"pliCount"`
	FirCount       uint64  `json:"firCount"`
	PacketsRetrans uint64  `json:"packetsRetransmitted"`
	Paused         bool    `json:"paused"`
	ProducerPaused *bool   `json:"producerPaused,omitempty"`
}

func sortedConsumers(m map[string]*consumer) []*consumer {
	out := make([]*consumer, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	// Creation order: their mids are increasing per recv transport.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].mid() < out[j-1].mid(); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (c *consumer) mid() int {
	n := 0
	for _, ch := range c.params.MID {
		n = n*10 + int(ch-'0')
	}
	return n
}

// stats is the transport's item (router lock held).
func (t *transport) stats(now time.Time) TransportStats {
	st, iceState, dtls, badSince := t.st.snapshot()
	t.mu.Lock()
	ufrag, remote, gen := t.ufrag, t.remoteUfrag, t.iceGen
	t.mu.Unlock()
	out := TransportStats{
		Type: "webrtc-transport", TransportID: t.id, Timestamp: now.UnixMilli(),
		State: st.String(), IceRole: "controlled", IceState: iceState, DtlsState: dtls,
		IceUsernameFragment: ufrag, IceRemoteUsernameFrag: remote, IceRestarts: gen,
		RtpPacketsReceived: t.rtpIn.Load(), RtpPacketsSent: t.rtpOut.Load(),
	}
	if !badSince.IsZero() {
		out.DisconnectedForMs = now.Sub(badSince).Milliseconds()
	}
	if t.dir == dirSend {
		out.Direction = "send"
		for _, pr := range t.owner.producers {
			out.BytesReceived += pr.bytes.Load()
			out.RecvBitrate += pr.ctl.bitrate
		}
	} else {
		out.Direction = "recv"
		for _, c := range t.owner.consumers {
			out.BytesSent += c.bytes.Load()
			out.SendBitrate += c.bitrate()
		}
	}
	if st == connConnected || st == connDisconnected {
		if pair, err := t.agent.GetSelectedCandidatePair(); err == nil && pair != nil {
			proto := "udp"
			if pair.Local.NetworkType().IsTCP() {
				proto = "tcp"
			}
			out.IceSelectedTuple = &IceSelectedTuple{
				LocalIP: pair.Local.Address(), LocalPort: pair.Local.Port(),
				RemoteIP: pair.Remote.Address(), RemotePort: pair.Remote.Port(), Protocol: proto,
			}
		}
	}
	return out
}

func (c *consumer) bitrate() uint64 { return c.ctl.bitrate }

// stats is the producer's inbound-rtp item (router lock held).
func (p *producer) stats(now time.Time) RtpStreamStats {
	c := &p.ctl
	c.mu.Lock()
	exp, recv, jitter := c.expectedLocked(), c.receivedLocked(), c.jitter
	c.mu.Unlock()
	lost := int64(exp) - int64(recv)
	if lost < 0 {
		lost = 0
	}
	return RtpStreamStats{
		Type: "inbound-rtp", ProducerID: p.id, Timestamp: now.UnixMilli(),
		Ssrc: p.layers[0].ssrc.Load(), RtxSsrc: p.layers[0].rtxSSRC.Load(), Kind: p.kind, MimeType: p.codec.MimeType,
		PacketCount: p.packets.Load(), ByteCount: p.bytes.Load(), Bitrate: c.bitrate,
		PacketsLost: lost, FractionLost: c.fractionLost, Jitter: uint32(jitter),
		Score: score(c.fractionLost), NackCount: c.nacks.Load(), PliCount: c.plis.Load(),
		PacketsRetrans: c.rtx.Load(), Paused: p.state() == streamPaused,
	}
}

// stats is the consumer's outbound-rtp item (router lock held).
func (c *consumer) stats(now time.Time) RtpStreamStats {
	cc := &c.ctl
	cc.mu.Lock()
	lost, frac, jitter, rtt := cc.packetsLost, cc.fractionLost, cc.jitter, cc.rtt
	cc.mu.Unlock()
	pp := c.p.state() == streamPaused
	mime := ""
	if len(c.params.Codecs) > 0 {
		mime = c.params.Codecs[0].MimeType
	}
	return RtpStreamStats{
		Type: "outbound-rtp", ProducerID: c.p.id, ConsumerID: c.id, Timestamp: now.UnixMilli(),
		Ssrc: c.ssrc, RtxSsrc: c.rtxSSRC, Kind: strings.ToLower(c.p.kind), MimeType: mime,
		PacketCount: c.packets.Load(), ByteCount: c.bytes.Load(), Bitrate: cc.bitrate,
		PacketsLost: int64(lost), FractionLost: frac, Jitter: jitter, RoundTripTime: rtt,
		Score: score(frac), NackCount: cc.nacks.Load(), PliCount: cc.plis.Load(), FirCount: cc.firs.Load(),
		Paused: c.state() == streamPaused, ProducerPaused: &pp,
	}
}
