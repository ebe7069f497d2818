package media

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/protocol"
)

// Data channel messages of PROTOCOL.md section 6 (v1.1).
const (
	TypeProduceData         = "media:produce_data"
	TypeConsumeData         = "media:consume_data"
	TypeProduceDataResult   = "media:produce_data_result"
	TypeNewDataProducer     = "media:new_data_producer"
	TypeDataConsumerCreated = "media:data_consumer_created"
)

type produceDataRequest struct {
	RoomID               string          `json:"room_id"`
	TransportID          string          `json:"transport_id"`
	SctpStreamParameters json.RawMessage `json:"sctp_stream_parameters"`
	Label                *string         `json:"label"`
	Protocol             *string         `json:"protocol"`
}

type consumeDataRequest struct {
	RoomID         string `json:"room_id"`
	DataProducerID string `json:"data_producer_id"`
}

type dataConsumerCreated struct {
	ID                   string               `json:"id"`
	DataProducerID       string               `json:"data_producer_id"`
	SctpStreamParameters SctpStreamParameters `json:"sctp_stream_parameters"`
	Label                string               `json:"label"`
	Protocol             string               `json:"protocol"`
}

// parseSctpStreamParameters validates the client's sctp_stream_parameters
// as mediasoup does: streamId (0..1023) is required; ordered defaults to
// true, or false when maxPacketLifeTime or maxRetransmits is given; those
// two are exclusive, and neither (when non-zero) goes with ordered true.
func parseSctpStreamParameters(raw json.RawMessage) (SctpStreamParameters, error) {
	var in struct {
		StreamID          *int64 `json:"streamId"`
		Ordered           *bool  `json:"ordered"`
		MaxPacketLifeTime *int64 `json:"maxPacketLifeTime"`
		MaxRetransmits    *int64 `json:"maxRetransmits"`
	}
	var out SctpStreamParameters
	if err := lenient(raw, 1024, "sctp_stream_parameters", &in); err != nil {
		return out, err
	}
	if in.StreamID == nil || *in.StreamID < 0 || *in.StreamID >= sctpNumStreams {
		return out, badRequest("sctp_stream_parameters.streamId must be 0 to %d", sctpNumStreams-1)
	}
	out.StreamID = uint16(*in.StreamID)
	u16 := func(name string, v *int64) (*uint16, error) {
		if v == nil {
			return nil, nil
		}
		if *v < 0 || *v > 65535 {
			return nil, badRequest("sctp_stream_parameters.%s must be 0 to 65535", name)
		}
		x := uint16(*v)
		return &x, nil
	}
	var err error
	if out.MaxPacketLifeTime, err = u16("maxPacketLifeTime", in.MaxPacketLifeTime); err != nil {
		return out, err
	}
	if out.MaxRetransmits, err = u16("maxRetransmits", in.MaxRetransmits); err != nil {
		return out, err
	}
	if out.MaxPacketLifeTime != nil && out.MaxRetransmits != nil {
		return out, badRequest("sctp_stream_parameters cannot have both maxPacketLifeTime and maxRetransmits")
	}
	partial := (out.MaxPacketLifeTime != nil && *out.MaxPacketLifeTime > 0) || (out.MaxRetransmits != nil && *out.MaxRetransmits > 0)
	switch {
	case in.Ordered == nil:
		out.Ordered = !partial
	case *in.Ordered && partial:
		return out, badRequest("sctp_stream_parameters cannot be ordered with maxPacketLifeTime or maxRetransmits")
	default:
		out.Ordered = *in.Ordered
	}
	return out, nil
}

func checkLabel(name string, v *string) (string, error) {
	if v == nil {
		return "", nil
	}
	if len(*v) > maxDataLabelLen || !utf8.ValidString(*v) || strings.IndexByte(*v, 0) >= 0 {
		return "", badRequest("%s must be at most %d bytes of UTF-8", name, maxDataLabelLen)
	}
	return *v, nil
}

// dataChannelsOn is unsupported when Config.DisableDataChannels.
func dataChannelsOn(q *request) error {
	if q.s.cfg.DisableDataChannels {
		return protocol.Errorf(protocol.CodeUnsupported, "data channels are disabled on this server (--media-data-channels=false)")
	}
	return nil
}

// handleProduceData: media:produce_data {room_id, transport_id,
// sctp_stream_parameters, label?, protocol?} → router.produceData on the
// caller's send transport (at most Config.MaxDataProducersPerConnection;
// a stream id in use is bad_request). The others get
// media:new_data_producer before the caller's media:produce_data_result
// {id}. sctp_stream_parameters is mediasoup's SctpStreamParameters
// (RFC 8831/8832 reliability); label and protocol at most
// maxDataLabelLen bytes of UTF-8.
func handleProduceData(q *request, data json.RawMessage) error {
	if err := dataChannelsOn(q); err != nil {
		return err
	}
	var m produceDataRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	params, err := parseSctpStreamParameters(m.SctpStreamParameters)
	if err != nil {
		return err
	}
	label, err := checkLabel("label", m.Label)
	if err != nil {
		return err
	}
	proto, err := checkLabel("protocol", m.Protocol)
	if err != nil {
		return err
	}
	sc, t, err := resolveIn(q, m.RoomID, m.TransportID, (*scope).sendTransport)
	if err != nil {
		return err
	}
	defer sc.done()
	if err := atMost(len(sc.p.dataProducers), q.s.cfg.MaxDataProducersPerConnection, "data producers"); err != nil {
		return err
	}
	dp := sc.r.produceData(t, params, label, proto)
	if dp == nil {
		return badRequest("sctp stream %d is already in use on transport %s", params.StreamID, t.id)
	}
	// As for media:produce, the others are told before the reply.
	q.s.notify.newDataProducerLocked(sc.r, dp)
	q.reply(TypeProduceDataResult, map[string]string{"id": dp.id})
	return nil
}

// handleConsumeData: media:consume_data {room_id, data_producer_id} →
// router.consumeData on the caller's recv transport (at most
// Config.MaxDataConsumersPerConnection; too_large when no SCTP stream is
// free); reply media:data_consumer_created {id, data_producer_id,
// sctp_stream_parameters, label, protocol}.
func handleConsumeData(q *request, data json.RawMessage) error {
	if err := dataChannelsOn(q); err != nil {
		return err
	}
	var m consumeDataRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	sc, dp, err := resolveID(q, m.RoomID, "data_producer_id", m.DataProducerID, (*scope).dataProducer)
	if err != nil {
		return err
	}
	defer sc.done()
	if err := atMost(len(sc.p.dataConsumers), q.s.cfg.MaxDataConsumersPerConnection, "data consumers"); err != nil {
		return err
	}
	c := sc.r.consumeData(sc.p, dp)
	if c == nil {
		return protocol.Errorf(protocol.CodeTooLarge, "no free SCTP stream on transport %s", sc.p.recv.id)
	}
	q.reply(TypeDataConsumerCreated, dataConsumerCreated{
		ID: c.id, DataProducerID: dp.id, SctpStreamParameters: c.params, Label: dp.label, Protocol: dp.protocol,
	})
	return nil
}
