package media

import (
	"github.com/parleyhq/parley/internal/protocol"
)

// The messages the SFU sends without being asked (PROTOCOL.md section 6):
// announcements to the other participants of a call and notifications
// from the packet path and the worker. This file and the request handlers
// (signalling*.go) are the only places that encode media:* JSON; the
// objects (router, transport, producer, consumer, data producer/consumer)
// call a notifier with Go values.

// notifier encodes media:* messages (protocol.Encode: {type, id?, data})
// and hands them to the Sender, one frame per connection, never blocking.
// The zero notifier (no Sender: fuzz targets, unit tests) drops them.
// Methods named ...Locked are called with the router's lock held, which
// orders a call's messages the same for every connection.
type notifier struct{ sender Sender }

// send encodes one message of type typ (reply to reqID when not "") with
// payload v to connID.
func (n notifier) send(connID, typ, reqID string, v any) {
	if n.sender == nil {
		return
	}
	n.sender.SendToConnection(connID, protocol.Encode(typ, reqID, v))
}

// ack sends protocol.TypeAck for reqID; nothing when reqID is "" (a leave
// the server starts itself).
func (n notifier) ack(connID, reqID string) {
	if reqID != "" {
		n.send(connID, protocol.TypeAck, reqID, nil)
	}
}

// othersLocked sends one message, encoded once, to every participant of r
// but skip (nil: to all), in join order.
func (n notifier) othersLocked(r *router, skip *participant, typ string, v any) {
	if n.sender == nil {
		return
	}
	frame := protocol.Encode(typ, "", v)
	for _, o := range r.sortedParticipants() {
		if o != skip {
			n.sender.SendToConnection(o.connID, frame)
		}
	}
}

// roomClosed sends media:room_closed {room_id} to one connection: its
// call ended (EndCall) or it was made to leave (transport timeout).
func (n notifier) roomClosed(connID, roomID string) {
	n.send(connID, TypeRoomClosed, "", map[string]string{"room_id": roomID})
}

// peerLeftLocked tells r's remaining participants that p left:
// media:peer_left {room_id, user_id, connection_id}.
func (n notifier) peerLeftLocked(r *router, p *participant) {
	n.othersLocked(r, p, TypePeerLeft, map[string]string{
		"room_id": r.roomID, "user_id": p.userID, "connection_id": p.connID,
	})
}

// newProducerMsg is media:new_producer.
type newProducerMsg struct {
	ProducerID   string `json:"producer_id"`
	UserID       string `json:"user_id"`
	ConnectionID string `json:"connection_id"`
	Kind         string `json:"kind"`
	Source       string `json:"source"`
}

func newProducerPayload(p *producer) newProducerMsg {
	return newProducerMsg{
		ProducerID: p.id, UserID: p.owner.userID, ConnectionID: p.owner.connID, Kind: p.kind, Source: p.source,
	}
}

// newProducerLocked announces pr to every participant but its owner.
func (n notifier) newProducerLocked(r *router, pr *producer) {
	n.othersLocked(r, pr.owner, TypeNewProducer, newProducerPayload(pr))
}

// producerClosedLocked tells every participant but pr's owner that pr
// closed: media:producer_closed {producer_id, user_id}.
func (n notifier) producerClosedLocked(r *router, pr *producer) {
	n.othersLocked(r, pr.owner, TypeProducerClosed, map[string]string{
		"producer_id": pr.id, "user_id": pr.owner.userID,
	})
}

// pausedMsg is media:producer_paused / media:producer_resumed.
type pausedMsg struct {
	ProducerID string `json:"producer_id"`
	UserID     string `json:"user_id"`
}

// producerPausedLocked sends media:producer_paused (pause) or
// media:producer_resumed once to each connection with a consumer of pr.
func (n notifier) producerPausedLocked(pr *producer, pause bool) {
	if n.sender == nil {
		return
	}
	typ := TypeProducerResumed
	if pause {
		typ = TypeProducerPaused
	}
	frame := protocol.Encode(typ, "", pausedMsg{ProducerID: pr.id, UserID: pr.owner.userID})
	told := map[string]bool{}
	for _, c := range pr.consumerList() {
		if conn := c.owner.connID; !told[conn] {
			told[conn] = true
			n.sender.SendToConnection(conn, frame)
		}
	}
}

// layersChangedMsg is media:consumer_layers_changed (consumer ids are
// unique across rooms: no room_id, as PROTOCOL.md names it).
type layersChangedMsg struct {
	ConsumerID    string `json:"consumer_id"`
	SpatialLayer  int    `json:"spatial_layer"`
	TemporalLayer int    `json:"temporal_layer"`
}

// consumerLayersChanged tells c's connection which layers it now
// receives (media:consumer_layers_changed). It runs on the packet path
// and the worker, without the router's lock.
func (n notifier) consumerLayersChanged(c *consumer, ls layerState) {
	if c.owner == nil {
		return
	}
	n.send(c.owner.connID, TypeConsumerLayersChanged, "", layersChangedMsg{
		ConsumerID: c.id, SpatialLayer: ls.spatial, TemporalLayer: ls.temporal,
	})
}

// activeSpeakerMsg is media:active_speaker.
type activeSpeakerMsg struct {
	RoomID       string `json:"room_id"`
	ProducerID   string `json:"producer_id"`
	UserID       string `json:"user_id"`
	ConnectionID string `json:"connection_id"`
}

// activeSpeakerLocked tells every participant of r that pr's owner is
// the active speaker.
func (n notifier) activeSpeakerLocked(r *router, pr *producer) {
	n.othersLocked(r, nil, TypeActiveSpeaker, activeSpeakerMsg{
		RoomID: r.roomID, ProducerID: pr.id, UserID: pr.owner.userID, ConnectionID: pr.owner.connID,
	})
}

// newDataProducerMsg is media:new_data_producer.
type newDataProducerMsg struct {
	DataProducerID string `json:"data_producer_id"`
	UserID         string `json:"user_id"`
	ConnectionID   string `json:"connection_id"`
	Label          string `json:"label"`
	Protocol       string `json:"protocol"`
}

func newDataProducerPayload(p *dataProducer) newDataProducerMsg {
	return newDataProducerMsg{
		DataProducerID: p.id, UserID: p.owner.userID, ConnectionID: p.owner.connID, Label: p.label, Protocol: p.protocol,
	}
}

// newDataProducerLocked announces dp to every participant but its owner.
func (n notifier) newDataProducerLocked(r *router, dp *dataProducer) {
	n.othersLocked(r, dp.owner, TypeNewDataProducer, newDataProducerPayload(dp))
}
