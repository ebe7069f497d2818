package media

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The RTP requests of PROTOCOL.md section 6: media:produce, media:consume,
// media:producer_close, media:set_preferred_layers and the v1.1 pause and
// resume requests. Each handler decodes and validates the request's data,
// resolves its ids once (request.resolve, then scope's look-ups), calls
// the router, producer or consumer, and encodes the reply and the
// announcements under the router's lock.

type produceRequest struct {
	RoomID        string          `json:"room_id"`
	TransportID   string          `json:"transport_id"`
	Kind          string          `json:"kind"`
	RtpParameters json.RawMessage `json:"rtp_parameters"`
	Source        *string         `json:"source"`
}

// parsedProduce is a validated produce request.
type parsedProduce struct {
	params   RtpParameters
	codec    RtpCodecParameters
	router   RtpCodecCapability
	layers   []parsedLayer
	ridBased bool
	rtxPT    uint8
	extURI   map[uint8]string
	twccID   uint8
	midExt   uint8
	ridExt   uint8
	rridExt  uint8
	temporal int
	svc      int  // VP9 SVC spatial layers in the one encoding (0: none)
	ksvc     bool // ... dependent only at key frames
	source   string
}

func parseProduce(m *produceRequest) (*parsedProduce, error) {
	if m.Kind != kindAudio && m.Kind != kindVideo {
		return nil, badRequest("kind must be audio or video")
	}
	out := &parsedProduce{}
	if m.Source != nil {
		src := *m.Source
		if src == "" || len(src) > maxSourceLen || !utf8.ValidString(src) || strings.IndexFunc(src, unicode.IsControl) >= 0 {
			return nil, badRequest("source must be 1 to %d characters, no control characters", maxSourceLen)
		}
		out.source = src
	} else if m.Kind == kindAudio {
		out.source = "mic"
	} else {
		out.source = "webcam"
	}
	rp := &out.params
	if err := lenient(m.RtpParameters, maxRTPParamSize, "rtp_parameters", rp); err != nil {
		return nil, err
	}
	if len(rp.Codecs) == 0 || len(rp.Codecs) > 32 {
		return nil, badRequest("rtp_parameters.codecs needs 1 to 32 codecs")
	}
	media := -1
	for i, c := range rp.Codecs {
		if c.MimeType == "" || c.ClockRate == 0 || c.PayloadType > 127 {
			return nil, badRequest("rtp_parameters.codecs[%d] needs mimeType, clockRate and a payloadType 0-127", i)
		}
		if err := checkCodecParameters(c.Parameters); err != nil {
			return nil, badRequest("rtp_parameters.codecs[%d].parameters: %v", i, err)
		}
		if media < 0 && !isRTXMime(c.MimeType) {
			media = i
		}
	}
	if media < 0 {
		return nil, badRequest("rtp_parameters has no media codec")
	}
	out.codec = rp.Codecs[media]
	if !strings.HasPrefix(strings.ToLower(out.codec.MimeType), m.Kind+"/") {
		return nil, badRequest("codec %s does not match kind %s", out.codec.MimeType, m.Kind)
	}
	rc, ok := findRouterCodec(m.Kind, out.codec.MimeType, out.codec.ClockRate, out.codec.Channels, out.codec.Parameters)
	if !ok {
		return nil, badRequest("unsupported codec %s", out.codec.MimeType)
	}
	out.router = rc
	for _, c := range rp.Codecs {
		if isRTXMime(c.MimeType) {
			if apt, ok := paramInt(c.Parameters, "apt"); ok && apt == int(out.codec.PayloadType) {
				out.rtxPT = c.PayloadType
			}
		}
	}
	layers, ridBased, err := parseEncodings(rp.Encodings, out.rtxPT)
	if err != nil {
		return nil, err
	}
	out.layers, out.ridBased = layers, ridBased
	out.temporal = 1
	for _, e := range rp.Encodings {
		if len(e.ScalabilityMode) > 16 || !isToken(e.ScalabilityMode, "_") {
			return nil, badRequest("scalabilityMode must be at most 16 of [A-Za-z0-9_]")
		}
		out.temporal = max(out.temporal, temporalOf(e.ScalabilityMode))
	}
	out.svc, out.ksvc = svcOf(out.codec.MimeType, rp.Encodings)
	if len(rp.HeaderExtensions) > 32 {
		return nil, badRequest("too many header extensions")
	}
	out.extURI = map[uint8]string{}
	for _, e := range rp.HeaderExtensions {
		if e.ID < 1 || e.ID > 255 || e.URI == "" || len(e.URI) > 256 {
			return nil, badRequest("invalid header extension %q id %d", e.URI, e.ID)
		}
		out.extURI[uint8(e.ID)] = e.URI
		switch e.URI {
		case extTransportCC:
			out.twccID = uint8(e.ID)
		case extMID:
			out.midExt = uint8(e.ID)
		case extRID:
			out.ridExt = uint8(e.ID)
		case extRRID:
			out.rridExt = uint8(e.ID)
		}
	}
	if out.ridBased && out.ridExt == 0 {
		return nil, badRequest("rid-based encodings need the %s header extension", extRID)
	}
	if !visibleASCII(rp.Rtcp.CNAME) {
		return nil, badRequest("rtcp.cname must be printable ASCII without spaces")
	}
	if len(rp.Rtcp.CNAME) > 256 || len(rp.MID) > 32 {
		return nil, badRequest("rtcp.cname or mid too long")
	}
	return out, nil
}

// handleProduce: media:produce {room_id, transport_id, kind,
// rtp_parameters, source?} → router.produce on the caller's send
// transport (at most Config.MaxProducersPerConnection). rtp_parameters is
// mediasoup's RtpParameters (at most maxRTPParamSize bytes): one media
// codec the router has, optional RTX (apt), up to 3 encodings (ssrc or
// rid-based, RFC 8851/8852 with the RID extension), header extensions
// RFC 8285. The others get media:new_producer before the caller's
// media:produce_result {id}.
func handleProduce(q *request, data json.RawMessage) error {
	var m produceRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	pp, err := parseProduce(&m)
	if err != nil {
		return err
	}
	sc, t, err := resolveIn(q, m.RoomID, m.TransportID, (*scope).sendTransport)
	if err != nil {
		return err
	}
	defer sc.done()
	if err := atMost(len(sc.p.producers), q.s.cfg.MaxProducersPerConnection, "producers"); err != nil {
		return err
	}
	pr, err := sc.r.produce(t, pp, m.Kind)
	if err != nil {
		return badRequest("%s", err.Error())
	}
	// The others are told before the producer gets its reply, so that once
	// the reply is in, every participant's media:new_producer is already
	// queued ahead of anything sent to them afterwards.
	q.s.notify.newProducerLocked(sc.r, pr)
	q.reply(TypeProduceResult, map[string]string{"id": pr.id})
	return nil
}

type consumerCreated struct {
	ID            string        `json:"id"`
	ProducerID    string        `json:"producer_id"`
	Kind          string        `json:"kind"`
	RtpParameters RtpParameters `json:"rtp_parameters"`
	// Paused echoes media:consume's paused; ProducerPaused: its producer
	// is paused by its owner now (media:producer_resumed follows).
	Paused         bool `json:"paused"`
	ProducerPaused bool `json:"producer_paused"`
}

// handleConsume: media:consume {room_id, producer_id, rtp_capabilities,
// paused?} → router.consume for any producer of the call (at most
// Config.MaxConsumersPerConnection), then consumer.start once the reply
// media:consumer_created {id, producer_id, kind, rtp_parameters, paused,
// producer_paused} is out. rtp_capabilities is the device's
// RtpCapabilities (mediasoup), at most maxRTPCapsSize bytes; no codec in
// common is bad_request.
func handleConsume(q *request, data json.RawMessage) error {
	var m struct {
		RoomID          string          `json:"room_id"`
		ProducerID      string          `json:"producer_id"`
		RtpCapabilities json.RawMessage `json:"rtp_capabilities"`
		Paused          bool            `json:"paused"`
	}
	if err := decode(data, &m); err != nil {
		return err
	}
	var caps RtpCapabilities
	if err := lenient(m.RtpCapabilities, maxRTPCapsSize, "rtp_capabilities", &caps); err != nil {
		return err
	}
	if err := validateCapabilities(&caps); err != nil {
		return badRequest("invalid rtp_capabilities: %s", err.Error())
	}
	sc, pr, err := resolveID(q, m.RoomID, "producer_id", m.ProducerID, (*scope).producer)
	if err != nil {
		return err
	}
	defer sc.done()
	if err := atMost(len(sc.p.consumers), q.s.cfg.MaxConsumersPerConnection, "consumers"); err != nil {
		return err
	}
	c, err := sc.r.consume(sc.p, pr, &caps, m.Paused)
	if err != nil {
		return badRequest("%s", err.Error())
	}
	// The reply goes out before the producer forwards to the consumer, so
	// that media:consumer_layers_changed never precedes it.
	q.reply(TypeConsumerCreated, consumerCreated{
		ID: c.id, ProducerID: pr.id, Kind: pr.kind, RtpParameters: c.params,
		Paused: m.Paused, ProducerPaused: pr.state() == streamPaused,
	})
	c.start()
	return nil
}

// handleProducerClose: media:producer_close {room_id, producer_id} →
// router.closeProducer for one of the caller's producers (and its
// consumers); ack, then media:producer_closed {producer_id, user_id} to
// the others.
func handleProducerClose(q *request, data json.RawMessage) error {
	var m struct {
		RoomID     string `json:"room_id"`
		ProducerID string `json:"producer_id"`
	}
	if err := decode(data, &m); err != nil {
		return err
	}
	sc, pr, err := resolveID(q, m.RoomID, "producer_id", m.ProducerID, (*scope).ownProducer)
	if err != nil {
		return err
	}
	defer sc.done()
	sc.r.closeProducerLocked(pr)
	q.ack()
	q.s.notify.producerClosedLocked(sc.r, pr)
	return nil
}

// handleSetPreferredLayers: media:set_preferred_layers {room_id,
// consumer_id, spatial_layer, temporal_layer?} → consumer.preferLayers:
// the highest layers the consumer wants (0-based, clamped to what the
// producer has; no temporal_layer: the highest). Ack; the allocator
// re-targets at once and media:consumer_layers_changed follows a change.
func handleSetPreferredLayers(q *request, data json.RawMessage) error {
	var m struct {
		RoomID        string `json:"room_id"`
		ConsumerID    string `json:"consumer_id"`
		SpatialLayer  *int   `json:"spatial_layer"`
		TemporalLayer *int   `json:"temporal_layer"`
	}
	if err := decode(data, &m); err != nil {
		return err
	}
	if err := checkID("consumer_id", m.ConsumerID); err != nil {
		return err
	}
	// Layers above the producer's are clamped to its highest (as
	// docs/protocol.md says), so any non-negative integer is accepted.
	if m.SpatialLayer == nil || *m.SpatialLayer < 0 {
		return badRequest("spatial_layer must be an integer from 0")
	}
	sl := min(*m.SpatialLayer, maxLayers-1)
	tl := -1
	if m.TemporalLayer != nil {
		if *m.TemporalLayer < 0 {
			return badRequest("temporal_layer must be an integer from 0")
		}
		tl = min(*m.TemporalLayer, maxTemporal-1)
	}
	sc, c, err := resolveIn(q, m.RoomID, m.ConsumerID, (*scope).consumer)
	if err != nil {
		return err
	}
	defer sc.done()
	q.ack()
	c.preferLayers(sl, tl)
	return nil
}

// ---- pause and resume (v1.1) ----

type producerIDRequest struct {
	RoomID     string `json:"room_id"`
	ProducerID string `json:"producer_id"`
}

type consumerIDRequest struct {
	RoomID     string `json:"room_id"`
	ConsumerID string `json:"consumer_id"`
}

func handleProducerPause(q *request, data json.RawMessage) error { return pauseProducer(q, data, true) }
func handleProducerResume(q *request, data json.RawMessage) error {
	return pauseProducer(q, data, false)
}
func handleConsumerPause(q *request, data json.RawMessage) error { return pauseConsumer(q, data, true) }
func handleConsumerResume(q *request, data json.RawMessage) error {
	return pauseConsumer(q, data, false)
}

// pauseProducer: media:producer_pause / media:producer_resume {room_id,
// producer_id} from the producer's owner → producer.setPaused. Ack, then
// media:producer_paused / _resumed {producer_id, user_id} to every
// connection with a consumer of it (once each); a state that does not
// change is acked without notifications.
func pauseProducer(q *request, data json.RawMessage, pause bool) error {
	var m producerIDRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	sc, pr, err := resolveID(q, m.RoomID, "producer_id", m.ProducerID, (*scope).ownProducer)
	if err != nil {
		return err
	}
	defer sc.done()
	changed := pr.setPaused(pause)
	q.ack()
	if changed {
		q.s.notify.producerPausedLocked(pr, pause)
		if !pause {
			pr.restartConsumers()
		}
	}
	return nil
}

// pauseConsumer: media:consumer_pause / media:consumer_resume {room_id,
// consumer_id} from the consumer's owner → consumer.setPaused; ack.
func pauseConsumer(q *request, data json.RawMessage, pause bool) error {
	var m consumerIDRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	sc, c, err := resolveID(q, m.RoomID, "consumer_id", m.ConsumerID, (*scope).consumer)
	if err != nil {
		return err
	}
	defer sc.done()
	changed := c.setPaused(pause)
	q.ack()
	if changed && !pause {
		c.restart()
	}
	return nil
}

// What a producer sends that reaches other participants' SDP. Consumers
// get the producer's codec parameters and its RTCP CNAME, and
// mediasoup-client writes them into the SDP the consuming browser applies
// ("a=fmtp:<pt> k=v;k=v", "a=ssrc:<ssrc> cname:<cname>"; RFC 8866 5.13
// and RFC 5576 6.1): a CR or LF there would add lines of the producer's
// choosing to everyone else's session description. So a CNAME is visible
// ASCII (RFC 7022 CNAMEs are base64 or similar), a parameter name a token
// and a value a number or visible ASCII without ';' (the fmtp separator).

const maxCodecParameters = 32

// checkCodecParameters validates one codec's parameters (see above).
func checkCodecParameters(params map[string]any) error {
	if len(params) > maxCodecParameters {
		return fmt.Errorf("at most %d", maxCodecParameters)
	}
	for k, v := range params {
		if k == "" || len(k) > 64 || !isToken(k, "-_.") {
			return fmt.Errorf("name %q: 1 to 64 of [A-Za-z0-9._-]", k)
		}
		switch x := v.(type) {
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("%s: not a finite number", k)
			}
		case string:
			if len(x) > 256 || !visibleASCII(x) || strings.ContainsRune(x, ';') {
				return fmt.Errorf("%s: a string value must be at most 256 printable ASCII characters without spaces or ';'", k)
			}
		default:
			return fmt.Errorf("%s: a value must be a number or a string", k)
		}
	}
	return nil
}

// isToken reports whether s holds only ASCII letters, digits and extra.
func isToken(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}

// visibleASCII reports whether s holds only ASCII 0x21-0x7e.
func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
