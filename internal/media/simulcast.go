package media

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/rtp"
)

// Simulcast producers. A produce may carry up to 3 encodings, lowest
// first (mediasoup's numbering: encoding i is spatial layer i). Either
// every encoding names its SSRC (and RTX SSRC), or every encoding names a
// rid and no SSRC, as mediasoup-client does with Chromium: the SSRCs are
// then learned from the packets themselves (learnSSRC), by the RID header
// extension for media and the RRID (repaired-rtp-stream-id) one for RTX,
// along with the MID when the client declared it.

const maxLayers = 3

// parsedLayer is one validated encoding.
type parsedLayer struct {
	rid           string
	ssrc, rtxSSRC uint32
}

// validRID: RFC 8851 rid-id, alphanumeric, '-' and '_', at most 16 here.
func validRID(r string) bool { return r != "" && len(r) <= 16 && isToken(r, "-_") }

// parseEncodings validates rtp_parameters.encodings into layers.
func parseEncodings(encs []RtpEncodingParameters, rtxPT uint8) ([]parsedLayer, bool, error) {
	if len(encs) == 0 || len(encs) > maxLayers {
		return nil, false, badRequest("rtp_parameters.encodings needs 1 to %d encodings", maxLayers)
	}
	ridBased := encs[0].SSRC == 0
	seen := map[string]bool{}
	ssrcs := map[uint32]bool{}
	out := make([]parsedLayer, 0, len(encs))
	for i, e := range encs {
		var l parsedLayer
		if ridBased {
			if e.SSRC != 0 {
				return nil, false, badRequest("rtp_parameters.encodings mix ssrc and rid-only encodings")
			}
			if !validRID(e.RID) {
				return nil, false, badRequest("rtp_parameters.encodings[%d] needs an ssrc or a rid (1 to 16 of [A-Za-z0-9_-])", i)
			}
			if seen[e.RID] {
				return nil, false, badRequest("rid %q appears twice", e.RID)
			}
			seen[e.RID] = true
			l.rid = e.RID
		} else {
			if e.SSRC == 0 {
				return nil, false, badRequest("rtp_parameters.encodings[%d].ssrc is required when encodings[0] has one", i)
			}
			l.ssrc, l.rid = e.SSRC, e.RID
			if e.RTX != nil && e.RTX.SSRC != 0 && rtxPT != 0 {
				if e.RTX.SSRC == e.SSRC {
					return nil, false, badRequest("rtx ssrc equals media ssrc")
				}
				l.rtxSSRC = e.RTX.SSRC
			}
			for _, s := range []uint32{l.ssrc, l.rtxSSRC} {
				if s == 0 {
					continue
				}
				if ssrcs[s] {
					return nil, false, badRequest("ssrc %d appears twice", s)
				}
				ssrcs[s] = true
			}
		}
		out = append(out, l)
	}
	return out, ridBased, nil
}

// temporalOf reads the temporal layer count of a scalabilityMode such as
// "L1T3" or "S3T3" (1 when absent or unreadable).
func temporalOf(mode string) int {
	i := strings.IndexByte(mode, 'T')
	if i < 0 {
		return 1
	}
	j := i + 1
	for j < len(mode) && mode[j] >= '0' && mode[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(mode[i+1 : j])
	if err != nil || n < 1 || n > maxTemporal {
		return 1
	}
	return n
}

// svcOf reads VP9 SVC from a producer's encodings (mediasoup's
// scalabilityMode, W3C webrtc-svc): a single VP9 encoding whose mode is
// "L<n>T<m>" (full SVC: each picture's layer n references layer n-1),
// "L<n>T<m>_KEY" or "S<n>T<m>" (K-SVC: the layers depend on each other
// only at key frames), with 2 <= n <= 3, carries n spatial layers in one
// SSRC. Anything else (simulcast, other codecs, n = 1, an unreadable
// mode) is not SVC: 0.
func svcOf(mime string, encs []RtpEncodingParameters) (layers int, ksvc bool) {
	if !strings.EqualFold(mime, "video/VP9") || len(encs) != 1 {
		return 0, false
	}
	mode := encs[0].ScalabilityMode
	if len(mode) < 4 || (mode[0] != 'L' && mode[0] != 'S') || mode[1] < '2' || mode[1] > '0'+maxLayers || mode[2] != 'T' {
		return 0, false
	}
	return int(mode[1] - '0'), mode[0] == 'S' || strings.Contains(mode, "_KEY")
}

// consumerScalabilityMode is what a consumer's single encoding declares,
// as mediasoup does: L<spatial layers>T<temporal layers> for simulcast,
// the producer's own mode otherwise.
func consumerScalabilityMode(p *producer) string {
	if len(p.layers) > 1 {
		return fmt.Sprintf("L%dT%d", len(p.layers), p.temporalLayers)
	}
	for _, e := range p.params.Encodings {
		if e.ScalabilityMode != "" {
			return e.ScalabilityMode
		}
	}
	return ""
}

// learnSSRC routes a packet of an SSRC no route knows to the rid-based
// layer it names (RID for media, RRID — or RID — for RTX, by payload
// type), when the MID, if both sides carry one, is the producer's. The
// SSRC is then bound to that layer for good (a layer takes one media and
// one RTX SSRC). Runs on the read goroutine.
func (t *transport) learnSSRC(pkt *rtp.Packet) (producerRoute, bool) {
	list := t.ridProducers.Load()
	if list == nil || !pkt.Extension {
		return producerRoute{}, false
	}
	for _, p := range *list {
		if p.state() == streamClosed {
			continue
		}
		if p.midExt != 0 && p.mid != "" {
			if m := pkt.GetExtension(p.midExt); m != nil && string(m) != p.mid {
				continue
			}
		}
		var rid []byte
		isRTX := false
		switch {
		case pkt.PayloadType == p.pt:
			if p.ridExt != 0 {
				rid = pkt.GetExtension(p.ridExt)
			}
		case p.rtxPT != 0 && pkt.PayloadType == p.rtxPT:
			isRTX = true
			if p.rridExt != 0 {
				rid = pkt.GetExtension(p.rridExt)
			}
			if rid == nil && p.ridExt != 0 {
				rid = pkt.GetExtension(p.ridExt)
			}
		default:
			continue
		}
		if len(rid) == 0 {
			continue
		}
		for i, lay := range p.layers {
			if lay.rid == string(rid) {
				return t.bindLayer(p, i, pkt.SSRC, isRTX)
			}
		}
	}
	return producerRoute{}, false
}

// bindLayer routes ssrc to layer li of p (media or RTX) unless that layer
// already has one or the SSRC is taken.
func (t *transport) bindLayer(p *producer, li int, ssrc uint32, isRTX bool) (producerRoute, bool) {
	t.routesMu.Lock()
	defer t.routesMu.Unlock()
	if p.state() == streamClosed || ssrc == 0 {
		return producerRoute{}, false
	}
	lay := p.layers[li]
	slot := &lay.ssrc
	if isRTX {
		slot = &lay.rtxSSRC
	}
	old := *t.producers.Load()
	if _, dup := old[ssrc]; dup || slot.Load() != 0 {
		return producerRoute{}, false
	}
	slot.Store(ssrc)
	r := producerRoute{p: p, layer: uint8(li), isRTX: isRTX}
	m := make(map[uint32]producerRoute, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[ssrc] = r
	t.producers.Store(&m)
	t.log.Debug("learned simulcast ssrc", "producer", p.id, "rid", lay.rid, "ssrc", ssrc, "rtx", isRTX)
	return r, true
}

// setRIDProducers updates the list learnSSRC reads (router lock held).
func (t *transport) setRIDProducers(fn func([]*producer) []*producer) {
	var old []*producer
	if l := t.ridProducers.Load(); l != nil {
		old = *l
	}
	next := fn(append([]*producer(nil), old...))
	t.ridProducers.Store(&next)
}
