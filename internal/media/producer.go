package media

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// producer is one incoming track on a send transport.
type producer struct {
	id      string
	kind    string
	source  string
	owner   *participant
	t       *transport
	params  RtpParameters // as the client sent them
	codec   RtpCodecParameters
	router  RtpCodecCapability // matched router codec
	ssrc    uint32
	rtxSSRC uint32
	pt      uint8
	rtxPT   uint8
	cname   string
	extURI  map[uint8]string // client's ids
	seqNo   uint64

	consumers atomic.Pointer[[]*consumer]
	closed    atomic.Bool
	paused    atomic.Bool // media:producer_pause: nothing is read or forwarded

	mu         sync.Mutex
	started    bool
	highestSeq uint16
	lastPLI    time.Time
	history    *packetHistory

	packets atomic.Uint64
	bytes   atomic.Uint64

	ctl producerCtl // statistics and audio level (stats.go)
}

// ProducerInfo describes a producer in Participants.
type ProducerInfo struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Source string `json:"source"`
}

// receive handles one decrypted packet from the producer's client.
func (p *producer) receive(pkt *rtp.Packet, isRTX bool) {
	if p.closed.Load() || p.paused.Load() {
		return
	}
	if isRTX {
		if len(pkt.Payload) < 2 {
			return // padding probe
		}
		osn := binary.BigEndian.Uint16(pkt.Payload)
		pkt.Payload = pkt.Payload[2:]
		pkt.SequenceNumber = osn
		pkt.SSRC = p.ssrc
		pkt.PayloadType = p.pt
	} else if pkt.PayloadType != p.pt {
		return
	}
	if len(pkt.Payload) == 0 {
		return // padding only
	}
	p.observe(pkt, isRTX)
	p.packets.Add(1)
	p.bytes.Add(uint64(len(pkt.Payload)))
	if p.history != nil {
		var missing []uint16
		p.mu.Lock()
		p.history.store(pkt)
		if !p.started {
			p.started, p.highestSeq = true, pkt.SequenceNumber
		} else if d := int16(pkt.SequenceNumber - p.highestSeq); d > 0 {
			if d > 1 && d <= 128 && !isRTX {
				for s := p.highestSeq + 1; s != pkt.SequenceNumber; s++ {
					missing = append(missing, s)
				}
			}
			p.highestSeq = pkt.SequenceNumber
		}
		p.mu.Unlock()
		if len(missing) > 0 {
			p.countNACK()
			p.t.writeRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{
				SenderSSRC: 1, MediaSSRC: p.ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers(missing),
			}})
		}
	}
	for _, c := range *p.consumers.Load() {
		c.forwardContained(pkt)
	}
}

// requestKeyFrame asks the producer's client for a key frame (PLI),
// at most every 300 ms unless forced.
func (p *producer) requestKeyFrame(force bool) {
	if p.kind != kindVideo || p.closed.Load() {
		return
	}
	p.mu.Lock()
	now := time.Now()
	if !force && now.Sub(p.lastPLI) < 300*time.Millisecond {
		p.mu.Unlock()
		return
	}
	p.lastPLI = now
	p.mu.Unlock()
	p.countKeyFrameRequest()
	p.t.writeRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: p.ssrc}})
}

// onSenderReport forwards the producer's SR to each consumer, rewritten
// (same NTP/RTP time mapping; the consumer keeps the producer's timestamps).
func (p *producer) onSenderReport(sr *rtcp.SenderReport) {
	for _, c := range *p.consumers.Load() {
		if !c.t.ready.Load() {
			continue
		}
		c.noteSR(sr.NTPTime)
		c.t.writeRTCP([]rtcp.Packet{&rtcp.SenderReport{
			SSRC: c.ssrc, NTPTime: sr.NTPTime, RTPTime: sr.RTPTime,
			PacketCount: uint32(c.packets.Load()), OctetCount: uint32(c.bytes.Load()),
		}})
	}
}

func (p *producer) setConsumers(fn func([]*consumer) []*consumer) {
	old := *p.consumers.Load()
	next := fn(append([]*consumer(nil), old...))
	p.consumers.Store(&next)
}

func (p *producer) info() ProducerInfo {
	return ProducerInfo{ID: p.id, Kind: p.kind, Source: p.source}
}

// packetHistory keeps the last packets of a video producer for
// retransmission on a consumer's NACK.
type packetHistory struct {
	slots [historySize]historySlot
}

const historySize = 1024

type historySlot struct {
	valid   bool
	seq     uint16
	ts      uint32
	marker  bool
	payload []byte
}

func (h *packetHistory) store(pkt *rtp.Packet) {
	s := &h.slots[pkt.SequenceNumber%historySize]
	s.valid, s.seq, s.ts, s.marker = true, pkt.SequenceNumber, pkt.Timestamp, pkt.Marker
	s.payload = append(s.payload[:0], pkt.Payload...)
}

func (h *packetHistory) get(seq uint16) (historySlot, bool) {
	s := h.slots[seq%historySize]
	if !s.valid || s.seq != seq {
		return historySlot{}, false
	}
	s.payload = append([]byte(nil), s.payload...)
	return s, true
}
