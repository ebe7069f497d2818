package media

import (
	"github.com/parleyhq/parley/internal/protocol"
)

// Pause and resume (PROTOCOL.md v1.1 section 6). The packet path reads one
// atomic flag: producer.paused at the top of producer.receive (nothing of a
// paused producer is stored, forwarded or read for its audio level, so the
// black frames and silence a paused mediasoup-client track keeps sending go
// nowhere) and consumer.paused in consumer.forward, before the forwarder.
// On resume the consumers concerned are restarted (consumer.restart). Everything
// else happens here, under the router's lock.

func validID(id string) bool { return id != "" && len(id) <= 64 }

type pausedMsg struct {
	ProducerID string `json:"producer_id"`
	UserID     string `json:"user_id"`
}

// pauseProducer handles media:producer_pause / media:producer_resume from
// the producer's owner: ack, then media:producer_paused / _resumed to every
// connection with a consumer of it (once each). A state that does not
// change is acked without notifications. On resume each consumer of the
// producer is restarted (consumer.restart: sequence numbers and timestamps
// continue, video waits for a key frame and requests one).
func (s *SFU) pauseProducer(roomID, connID, producerID string, pause bool, reqID string) error {
	if !validID(producerID) {
		return badRequest("invalid producer_id")
	}
	r, p, err := s.participantFor(roomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	pr := p.producers[producerID]
	if pr == nil {
		return protocol.Errorf(protocol.CodeNotFound, "unknown producer %s", producerID)
	}
	changed := pr.paused.Swap(pause) != pause
	if reqID != "" {
		s.sender.SendToConnection(connID, protocol.Encode(protocol.TypeAck, reqID, nil))
	}
	if !changed {
		return nil
	}
	typ := TypeProducerResumed
	if pause {
		typ = TypeProducerPaused
	}
	frame := protocol.Encode(typ, "", pausedMsg{ProducerID: pr.id, UserID: p.userID})
	told := map[string]bool{}
	for _, c := range *pr.consumers.Load() {
		if conn := c.owner.connID; !told[conn] {
			told[conn] = true
			s.sender.SendToConnection(conn, frame)
		}
	}
	if !pause {
		// Each consumer's forwarder continues its sequence numbers and
		// timestamps after the last ones sent; video waits for a key
		// frame, which restart requests.
		for _, c := range *pr.consumers.Load() {
			c.restart()
		}
	}
	return nil
}

// pauseConsumer handles media:consumer_pause / media:consumer_resume from
// the consumer's owner: ack; a resumed consumer is restarted
// (consumer.restart: a video consumer starts with a key frame, requested
// from its producer).
func (s *SFU) pauseConsumer(roomID, connID, consumerID string, pause bool, reqID string) error {
	if !validID(consumerID) {
		return badRequest("invalid consumer_id")
	}
	r, p, err := s.participantFor(roomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	c := p.consumers[consumerID]
	if c == nil {
		return protocol.Errorf(protocol.CodeNotFound, "unknown consumer %s", consumerID)
	}
	changed := c.paused.Swap(pause) != pause
	if reqID != "" {
		s.sender.SendToConnection(connID, protocol.Encode(protocol.TypeAck, reqID, nil))
	}
	if changed && !pause {
		c.restart()
	}
	return nil
}

type iceRestarted struct {
	TransportID   string        `json:"transport_id"`
	IceParameters IceParameters `json:"ice_parameters"`
}

// restartICE handles media:restart_ice for one of the caller's transports:
// the reply media:ice_restarted carries the new generation's ICE
// parameters for mediasoup-client's transport.restartIce({iceParameters}).
func (s *SFU) restartICE(roomID, connID, transportID, reqID string) error {
	r, p, err := s.participantFor(roomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	t, err := s.transportOf(r, p, transportID)
	if err != nil {
		return err
	}
	params, err := t.restartICE()
	if err != nil {
		s.log.Warn("ice restart failed", "transport", t.id, "err", err)
		return protocol.Errorf(protocol.CodeInternal, "ice restart of transport %s failed", t.id)
	}
	s.log.Debug("ice restart", "transport", t.id, "connection", connID)
	s.sender.SendToConnection(connID, protocol.Encode(TypeICERestarted, reqID, iceRestarted{
		TransportID: t.id, IceParameters: params,
	}))
	return nil
}
