package media

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// simPublisher is a synthetic simulcast VP8 publisher on a pion test
// client, the way Chromium sends it through mediasoup-client: rid-based
// encodings (no SSRC signalled) whose packets carry the MID and RID header
// extensions, RTX with the RRID one, three temporal layers (L1T3: TIDs
// 0,2,1,2), picture ids and TL0PICIDX per layer, a random timestamp base
// per layer and sender reports that map them. A layer sends a key frame
// on its first frame and after a PLI for its SSRC; NACKs are answered with
// RTX from a history.
type simPublisher struct {
	c      *testClient
	layers []*simLayer
	fps    int

	mu     sync.Mutex
	twSeq  uint16
	rtxSeq uint16

	plis    [3]atomic.Int32
	nacks   atomic.Int32
	skipMu  sync.Mutex
	skip    map[[2]int]bool // (layer, frame) whose 2nd packet is sent only as RTX (a loss)
	sent    atomic.Uint64
	sentVid atomic.Uint64 // payload bytes

	stop chan struct{}
	wg   sync.WaitGroup
}

type simLayer struct {
	idx        int
	rid        string
	ssrc, rtx  uint32
	pkts, size int
	seq        uint16
	tsBase     uint32
	pid        uint16
	tl0        uint8
	frame      int
	frames     atomic.Int64 // frame, for other goroutines
	sent       atomic.Uint64
	keyReq     atomic.Bool
	historyMu  sync.Mutex
	history    map[uint16]*rtp.Packet
}

// Header extension ids of the simulated client (its own, not the router's).
const (
	simMidExt  = 9
	simRIDExt  = 10
	simRRIDExt = 11
	simTWCCExt = 3
)

// simulcastParams is the rid-based produce of simPublisher.
func simulcastParams(layers int) map[string]any {
	encs := []map[string]any{}
	for i := 0; i < layers; i++ {
		encs = append(encs, map[string]any{"rid": "r" + string(rune('0'+i)), "active": true, "scalabilityMode": "L1T3"})
	}
	return map[string]any{
		"mid": "1",
		"codecs": []map[string]any{
			{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": map[string]any{},
				"rtcpFeedback": []map[string]any{{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "transport-cc"}}},
			{"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": map[string]any{"apt": 96}, "rtcpFeedback": []any{}},
		},
		"headerExtensions": []map[string]any{
			{"uri": extMID, "id": simMidExt, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extRID, "id": simRIDExt, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extRRID, "id": simRRIDExt, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extTransportCC, "id": simTWCCExt, "encrypt": false, "parameters": map[string]any{}},
		},
		"encodings": encs,
		"rtcp":      map[string]any{"cname": "simcname", "reducedSize": true},
	}
}

// newSimPublisher starts sending on c: layer i sends pkts[i] packets of
// size[i] bytes per frame at fps. The last payload byte is the layer.
func newSimPublisher(c *testClient, fps int, pkts, size []int) *simPublisher {
	p := &simPublisher{c: c, fps: fps, stop: make(chan struct{}), skip: map[[2]int]bool{}}
	for i := range pkts {
		p.layers = append(p.layers, &simLayer{
			idx: i, rid: "r" + string(rune('0'+i)), ssrc: 0x5000 + uint32(i), rtx: 0x6000 + uint32(i),
			pkts: pkts[i], size: size[i], seq: uint16(1000 * (i + 1)), tsBase: 0x10000000 * uint32(i+1),
			pid: uint16(100 * (i + 1)), tl0: uint8(10 * i), history: map[uint16]*rtp.Packet{},
		})
	}
	c.onRTCP = func(pkts []rtcp.Packet) {
		for _, pk := range pkts {
			switch x := pk.(type) {
			case *rtcp.PictureLossIndication:
				for _, l := range p.layers {
					if l.ssrc == x.MediaSSRC {
						p.plis[l.idx].Add(1)
						l.keyReq.Store(true)
					}
				}
			case *rtcp.TransportLayerNack:
				p.nacks.Add(1)
				for _, l := range p.layers {
					if l.ssrc == x.MediaSSRC {
						for _, pair := range x.Nacks {
							for _, s := range pair.PacketList() {
								p.resend(l, s)
							}
						}
					}
				}
			}
		}
	}
	p.wg.Add(1)
	go p.run()
	return p
}

// layerSent is how many packets layer l sent.
func (p *simPublisher) layerSent(l int) uint64 { return p.layers[l].sent.Load() }

// loseOnce makes frame of layer l lose its second packet: it is sent only
// when NACKed (as RTX).
func (p *simPublisher) loseOnce(l, frame int) {
	p.skipMu.Lock()
	p.skip[[2]int{l, frame}] = true
	p.skipMu.Unlock()
}

func (p *simPublisher) close() {
	close(p.stop)
	p.wg.Wait()
}

func (p *simPublisher) ext(h *rtp.Header, rid string, rrid bool) {
	_ = h.SetExtension(simMidExt, []byte("1"))
	if rrid {
		_ = h.SetExtension(simRRIDExt, []byte(rid))
	} else {
		_ = h.SetExtension(simRIDExt, []byte(rid))
	}
	p.mu.Lock()
	p.twSeq++
	s := p.twSeq
	p.mu.Unlock()
	_ = h.SetExtension(simTWCCExt, []byte{byte(s >> 8), byte(s)})
}

func (p *simPublisher) resend(l *simLayer, seq uint16) {
	l.historyMu.Lock()
	orig := l.history[seq]
	l.historyMu.Unlock()
	if orig == nil {
		return
	}
	p.mu.Lock()
	p.rtxSeq++
	rs := p.rtxSeq
	p.mu.Unlock()
	pk := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: rs, Timestamp: orig.Timestamp, SSRC: l.rtx, Marker: orig.Marker},
		Payload: append(binary.BigEndian.AppendUint16(nil, seq), orig.Payload...)}
	p.ext(&pk.Header, l.rid, true)
	_ = p.c.writeRTP(pk)
}

func (p *simPublisher) run() {
	defer p.wg.Done()
	tick := time.NewTicker(time.Second / time.Duration(p.fps))
	defer tick.Stop()
	sr := time.NewTicker(250 * time.Millisecond)
	defer sr.Stop()
	start := time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-sr.C:
			now := time.Now()
			var pkts []rtcp.Packet
			for _, l := range p.layers {
				pkts = append(pkts, &rtcp.SenderReport{SSRC: l.ssrc, NTPTime: ntpTime(now),
					RTPTime: l.tsBase + uint32(now.Sub(start).Seconds()*90000)})
			}
			_ = p.c.writeRTCP(pkts...)
		case now := <-tick.C:
			for _, l := range p.layers {
				p.frame(l, uint32(now.Sub(start).Seconds()*90000))
			}
		}
	}
}

var l1t3 = [4]uint8{0, 2, 1, 2}

func (p *simPublisher) frame(l *simLayer, elapsed uint32) {
	tid := l1t3[l.frame%4]
	key := l.frame == 0 || l.keyReq.Swap(false)
	if key {
		tid = 0
	}
	if tid == 0 {
		l.tl0++
	}
	l.pid = (l.pid + 1) & 0x7fff
	p.skipMu.Lock()
	lose := p.skip[[2]int{l.idx, l.frame}]
	p.skipMu.Unlock()
	for i := 0; i < l.pkts; i++ {
		payload := vp8Frame(l.pid, l.tl0, tid, key, i == 0, l.size)
		payload[len(payload)-1] = byte(l.idx)
		l.seq++
		pk := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: l.seq, Timestamp: l.tsBase + elapsed,
			SSRC: l.ssrc, Marker: i == l.pkts-1}, Payload: payload}
		p.ext(&pk.Header, l.rid, false)
		l.historyMu.Lock()
		l.history[l.seq] = pk
		delete(l.history, l.seq-512)
		l.historyMu.Unlock()
		if lose && i == 1 {
			continue
		}
		if p.c.writeRTP(pk) == nil {
			p.sent.Add(1)
			p.sentVid.Add(uint64(len(payload)))
			l.sent.Add(1)
		}
	}
	l.frame++
	l.frames.Store(int64(l.frame))
}

// ntpTime converts t to the 32.32 NTP format of sender reports.
func ntpTime(t time.Time) uint64 {
	secs := uint64(t.Unix()) + 2208988800
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}
