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

type newDataProducerMsg struct {
	DataProducerID string `json:"data_producer_id"`
	UserID         string `json:"user_id"`
	ConnectionID   string `json:"connection_id"`
	Label          string `json:"label"`
	Protocol       string `json:"protocol"`
}

type dataConsumerCreated struct {
	ID                   string               `json:"id"`
	DataProducerID       string               `json:"data_producer_id"`
	SctpStreamParameters SctpStreamParameters `json:"sctp_stream_parameters"`
	Label                string               `json:"label"`
	Protocol             string               `json:"protocol"`
}

func newDataProducerFrame(p *dataProducer) []byte {
	return protocol.Encode(TypeNewDataProducer, "", newDataProducerMsg{
		DataProducerID: p.id, UserID: p.owner.userID, ConnectionID: p.owner.connID, Label: p.label, Protocol: p.protocol,
	})
}

// handleData decodes and runs media:produce_data and media:consume_data.
func (s *SFU) handleData(connID, msgType, reqID string, data json.RawMessage) error {
	if s.cfg.DisableDataChannels {
		return protocol.Errorf(protocol.CodeUnsupported, "data channels are disabled on this server (--media-data-channels=false)")
	}
	if msgType == TypeProduceData {
		var m produceDataRequest
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.produceData(connID, &m, reqID)
	}
	var m consumeDataRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	return s.consumeData(connID, &m, reqID)
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

var dataProducerSeq atomicCounter

func (s *SFU) produceData(connID string, m *produceDataRequest, reqID string) error {
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
	r, p, err := s.participantFor(m.RoomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	t, err := s.transportOf(r, p, m.TransportID)
	if err != nil {
		return err
	}
	if t.dir != dirSend {
		return badRequest("transport %s is a receive transport", t.id)
	}
	if len(p.dataProducers) >= s.cfg.MaxDataProducersPerConnection {
		return protocol.Errorf(protocol.CodeTooLarge, "at most %d data producers per connection", s.cfg.MaxDataProducersPerConnection)
	}
	dp := &dataProducer{
		id: newID(), owner: p, t: t, params: params, label: label, protocol: proto, seqNo: dataProducerSeq.next(),
	}
	empty := []*dataConsumer{}
	dp.consumers.Store(&empty)
	if !t.data.addProducer(dp) {
		return badRequest("sctp stream %d is already in use on transport %s", params.StreamID, t.id)
	}
	p.dataProducers[dp.id] = dp
	r.dataProducers[dp.id] = dp
	// As for media:produce, the others are told before the reply.
	s.broadcastLocked(r, connID, newDataProducerFrame(dp))
	s.sender.SendToConnection(connID, protocol.Encode(TypeProduceDataResult, reqID, map[string]string{"id": dp.id}))
	return nil
}

func (s *SFU) consumeData(connID string, m *consumeDataRequest, reqID string) error {
	if m.DataProducerID == "" || len(m.DataProducerID) > 64 {
		return badRequest("invalid data_producer_id")
	}
	r, p, err := s.participantFor(m.RoomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	dp := r.dataProducers[m.DataProducerID]
	if dp == nil {
		return protocol.Errorf(protocol.CodeNotFound, "unknown data producer %s", m.DataProducerID)
	}
	if len(p.dataConsumers) >= s.cfg.MaxDataConsumersPerConnection {
		return protocol.Errorf(protocol.CodeTooLarge, "at most %d data consumers per connection", s.cfg.MaxDataConsumersPerConnection)
	}
	c := &dataConsumer{id: newID(), dp: dp, owner: p, t: p.recv, params: dp.params}
	if !p.recv.data.addConsumer(c) {
		return protocol.Errorf(protocol.CodeTooLarge, "no free SCTP stream on transport %s", p.recv.id)
	}
	dp.setConsumers(func(list []*dataConsumer) []*dataConsumer { return append(list, c) })
	p.dataConsumers[c.id] = c
	s.sender.SendToConnection(connID, protocol.Encode(TypeDataConsumerCreated, reqID, dataConsumerCreated{
		ID: c.id, DataProducerID: dp.id, SctpStreamParameters: c.params, Label: dp.label, Protocol: dp.protocol,
	}))
	return nil
}

// announceDataProducersLocked sends p one media:new_data_producer per data
// producer of the others (after media:join).
func (s *SFU) announceDataProducersLocked(r *router, p *participant) {
	for _, o := range r.sortedParticipants() {
		if o == p {
			continue
		}
		for _, dp := range sortedDataProducers(o.dataProducers) {
			s.sender.SendToConnection(p.connID, newDataProducerFrame(dp))
		}
	}
}
