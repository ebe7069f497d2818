package protocol

// The fixed sets of message types, used wherever a type becomes a metric
// label (parley_messages_in_total, parley_messages_out_total): a label is a
// member of these sets or "unknown" / "other", never a string a client made
// up (issue 9 §5; 500 random "room:<x>" types once grew /metrics to 57 MB).
//
// Add a type here when a handler starts accepting it (ClientTypes) or the
// server starts sending it (ServerTypes); until then it is counted as
// LabelUnknown / LabelOther.

// Labels for types outside the fixed sets.
const (
	LabelUnknown = "unknown" // a client message type no handler accepts
	LabelOther   = "other"   // a server frame whose type is not in ServerTypes
)

// Media message types (PROTOCOL.md v1.1 §6); internal/media has its own
// copies of the v1 names.
const (
	TypeMediaJoin                  = "media:join"
	TypeMediaConnectTransport      = "media:connect_transport"
	TypeMediaProduce               = "media:produce"
	TypeMediaConsume               = "media:consume"
	TypeMediaProducerClose         = "media:producer_close"
	TypeMediaLeave                 = "media:leave"
	TypeMediaProducerPause         = "media:producer_pause"
	TypeMediaProducerResume        = "media:producer_resume"
	TypeMediaConsumerPause         = "media:consumer_pause"
	TypeMediaConsumerResume        = "media:consumer_resume"
	TypeMediaSetPreferredLayers    = "media:set_preferred_layers"
	TypeMediaRestartICE            = "media:restart_ice"
	TypeMediaGetStats              = "media:get_stats"
	TypeMediaProduceData           = "media:produce_data"
	TypeMediaConsumeData           = "media:consume_data"
	TypeMediaRouterCapabilities    = "media:router_capabilities"
	TypeMediaTransportCreated      = "media:transport_created"
	TypeMediaTransportConnected    = "media:transport_connected"
	TypeMediaProduceResult         = "media:produce_result"
	TypeMediaNewProducer           = "media:new_producer"
	TypeMediaConsumerCreated       = "media:consumer_created"
	TypeMediaProducerClosed        = "media:producer_closed"
	TypeMediaPeerLeft              = "media:peer_left"
	TypeMediaRoomClosed            = "media:room_closed"
	TypeMediaProducerPaused        = "media:producer_paused"
	TypeMediaProducerResumed       = "media:producer_resumed"
	TypeMediaConsumerLayersChanged = "media:consumer_layers_changed"
	TypeMediaICERestarted          = "media:ice_restarted"
	TypeMediaStats                 = "media:stats"
	TypeMediaProduceDataResult     = "media:produce_data_result"
	TypeMediaNewDataProducer       = "media:new_data_producer"
	TypeMediaDataConsumerCreated   = "media:data_consumer_created"
	TypeMediaActiveSpeaker         = "media:active_speaker"

	TypeRoomMembers        = "room:members"
	TypeRoomMembersPage    = "room:members_page"
	TypeRoomMembersChanged = "room:members_changed"
	// TypeRoomPresenceBatch is a large room's coalesced presence
	// (docs/protocol.md "Large rooms"; not in PROTOCOL.md v1.1).
	TypeRoomPresenceBatch = "room:presence_batch"
)

// ClientTypes is every client → server message type some handler accepts
// (PROTOCOL.md v1.1 §2, §3, §5, §6).
var ClientTypes = []string{
	TypePing,
	TypeRoomJoin, TypeRoomLeave, TypeRoomUpdatePresence, TypeRoomUpdateStorage, TypeRoomBroadcast, TypeRoomMembers,
	TypeTypingStart, TypeTypingStop, TypePresenceUpdate,
	TypeMediaJoin, TypeMediaConnectTransport, TypeMediaProduce, TypeMediaConsume, TypeMediaProducerClose,
	TypeMediaLeave, TypeMediaProducerPause, TypeMediaProducerResume, TypeMediaConsumerPause,
	TypeMediaConsumerResume, TypeMediaSetPreferredLayers, TypeMediaRestartICE, TypeMediaGetStats,
	TypeMediaProduceData, TypeMediaConsumeData,
}

// ServerTypes is every server → client message type (PROTOCOL.md v1.1 §1–§6).
var ServerTypes = []string{
	TypeConnected, TypeError, TypeAck, TypePong,
	TypeRoomState, TypeRoomJoined, TypeRoomLeft, TypeRoomPresenceUpdated, TypeRoomStorageUpdated, TypeRoomEvent,
	TypeRoomMembersPage, TypeRoomMembersChanged, TypeRoomPresenceBatch,
	TypeRoomCallStarted, TypeRoomCallUpdated, TypeRoomCallEnded,
	TypeTypingStart, TypeTypingStop, TypePresenceUpdate,
	TypeMessageCreate, TypeMessageUpdate, TypeMessageDelete,
	TypeMediaRouterCapabilities, TypeMediaTransportCreated, TypeMediaTransportConnected, TypeMediaProduceResult,
	TypeMediaNewProducer, TypeMediaConsumerCreated, TypeMediaProducerClosed, TypeMediaPeerLeft, TypeMediaRoomClosed,
	TypeMediaProducerPaused, TypeMediaProducerResumed, TypeMediaConsumerLayersChanged, TypeMediaICERestarted,
	TypeMediaStats, TypeMediaProduceDataResult, TypeMediaNewDataProducer, TypeMediaDataConsumerCreated,
	TypeMediaActiveSpeaker,
}

// ErrorCodes is every error code the server sends (the label set of
// parley_errors_total).
var ErrorCodes = []string{CodeBadRequest, CodeTestFailed, CodeUnauthorized, CodeForbidden, CodeNotFound,
	CodeVersionConflict, CodeTooLarge, CodeRateLimited, CodeConflict, CodeInternal, CodeUnsupported}

// CloseCodes is every close code the server sends of its own accord (the
// label set of parley_closes_total). A valid code a client closed with is
// echoed (RFC 6455 §5.5.1) but labelled LabelOther unless it is in this set.
var CloseCodes = []int{CloseNormal, CloseGoingAway, CloseProtocolError, CloseInternalError, CloseHeartbeatMissed,
	CloseTokenExpired, CloseDisconnected, CloseSlowConsumer, CloseMessageTooBig, CloseRateLimited, CloseProtocolAbuse}

var (
	clientTypeSet = setOf(ClientTypes)
	serverTypeSet = setOf(ServerTypes)
)

func setOf(list []string) map[string]struct{} {
	m := make(map[string]struct{}, len(list))
	for _, s := range list {
		m[s] = struct{}{}
	}
	return m
}

// ClientTypeLabel returns typ when it is in ClientTypes, else LabelUnknown.
func ClientTypeLabel(typ string) string {
	if _, ok := clientTypeSet[typ]; ok {
		return typ
	}
	return LabelUnknown
}

// ServerTypeLabel returns typ when it is in ServerTypes, else LabelOther.
func ServerTypeLabel(typ string) string {
	if _, ok := serverTypeSet[typ]; ok {
		return typ
	}
	return LabelOther
}

// FrameType returns the type of an encoded server frame without decoding
// it: the bytes between `{"type":"` and the next `"`. Encode always writes
// the type first, as a plain ASCII JSON string. The result aliases frame;
// it is nil when frame does not start that way.
func FrameType(frame []byte) []byte {
	const prefix = `{"type":"`
	if len(frame) < len(prefix) || string(frame[:len(prefix)]) != prefix {
		return nil
	}
	rest := frame[len(prefix):]
	for i, b := range rest {
		if b == '"' {
			return rest[:i]
		}
		if b == '\\' {
			return nil // escapes never occur in a known type
		}
	}
	return nil
}
