package rooms

import (
	"bytes"
	"encoding/json"

	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/protocol"
)

// One decode+validate function per room:* request type. Each takes the
// envelope's data exactly as it came off the wire and returns the typed,
// validated request or a *protocol.Error (bad_request or too_large) that
// changes nothing. They need no connection or room, so fuzz targets
// (fuzz_test.go) call them directly; the handlers call nothing else to
// decode.

type joinData struct {
	RoomID       string          `json:"room_id"`
	Presence     json.RawMessage `json:"presence,omitempty"`
	SinceVersion *int64          `json:"since_version,omitempty"`
}

type leaveData struct {
	RoomID string `json:"room_id"`
}

// roomMessage is the data of a message aimed at one room.
type roomMessage interface{ room() string }

func (d *leaveData) room() string     { return d.RoomID }
func (d *presenceData) room() string  { return d.RoomID }
func (d *broadcastData) room() string { return d.RoomID }
func (d *storageData) room() string   { return d.RoomID }

// joinRequest is a validated room:join.
type joinRequest struct {
	RoomID string
	// Presence is nil when absent or null; keys whose value is null are
	// dropped and values are compact JSON.
	Presence map[string]json.RawMessage
	// SinceVersion is nil when absent; never negative.
	SinceVersion *int64
}

// decodeJoin decodes room:join {room_id, presence?, since_version?}.
// presenceMax is the largest presence object in bytes (as sent).
func decodeJoin(data json.RawMessage, presenceMax int) (joinRequest, *protocol.Error) {
	var d joinData
	if err := protocol.DecodeData(data, &d); err != nil {
		return joinRequest{}, err
	}
	if err := validRoom(d.RoomID); err != nil {
		return joinRequest{}, asProtocolError(err)
	}
	req := joinRequest{RoomID: d.RoomID, SinceVersion: d.SinceVersion}
	if len(d.Presence) > 0 && !bytes.Equal(d.Presence, []byte("null")) {
		p, err := parsePresenceObject(d.Presence, presenceMax)
		if err != nil {
			return joinRequest{}, err
		}
		req.Presence = mergePresence(nil, p)
	}
	if d.SinceVersion != nil && *d.SinceVersion < 0 {
		return joinRequest{}, protocol.Errorf(protocol.CodeBadRequest, "since_version must not be negative")
	}
	return req, nil
}

// decodeLeave decodes room:leave {room_id}.
func decodeLeave(data json.RawMessage) (leaveData, *protocol.Error) {
	var d leaveData
	return d, decodeRoomData(data, &d)
}

// decodePresence decodes room:update_presence {room_id, presence}: presence
// must be a JSON object of at most presenceMax bytes (as sent). The
// returned patch keeps null values (they remove keys in mergePresence).
func decodePresence(data json.RawMessage, presenceMax int) (string, map[string]json.RawMessage, *protocol.Error) {
	var d presenceData
	if err := decodeRoomData(data, &d); err != nil {
		return "", nil, err
	}
	p, err := parsePresenceObject(d.Presence, presenceMax)
	if err != nil {
		return "", nil, err
	}
	return d.RoomID, p, nil
}

// decodeStorage decodes room:update_storage {room_id, ops, base_version?}
// and parses the batch (see parseBatch).
func decodeStorage(data json.RawMessage, lim jsonpatch.Limits) (storageData, []jsonpatch.Op, *protocol.Error) {
	var d storageData
	if err := decodeRoomData(data, &d); err != nil {
		return d, nil, err
	}
	ops, err := parseBatch(d.Ops, lim)
	if err != nil {
		return d, nil, err
	}
	return d, ops, nil
}

// parseBatch parses a non-empty JSON Patch array within lim. Strings with
// invalid UTF-8 or unpaired surrogate escapes (lim.RejectInvalidText) and
// objects with two members of the same name, at any depth
// (lim.RejectDuplicateNames), are refused (bad_request), so that what is
// broadcast means exactly what is stored to every client's parser.
func parseBatch(raw json.RawMessage, lim jsonpatch.Limits) ([]jsonpatch.Op, *protocol.Error) {
	if len(raw) == 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "ops is required")
	}
	ops, err := jsonpatch.ParseOps(raw, lim)
	if err != nil {
		return nil, mapPatchError(err)
	}
	if len(ops) == 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "ops must not be empty")
	}
	return ops, nil
}

// decodeBroadcast decodes room:broadcast {room_id, event}: event is any
// JSON value and is required. It is relayed byte for byte (see
// docs/protocol.md: not normalised, not stored), duplicate member names
// included: every receiver gets the same bytes and nothing on the server
// depends on their meaning.
func decodeBroadcast(data json.RawMessage) (broadcastData, *protocol.Error) {
	var d broadcastData
	if err := decodeRoomData(data, &d); err != nil {
		return d, err
	}
	if len(d.Event) == 0 {
		return d, protocol.Errorf(protocol.CodeBadRequest, "event is required")
	}
	return d, nil
}

// decodeRoomData decodes data into d and checks its room id.
func decodeRoomData(data json.RawMessage, d roomMessage) *protocol.Error {
	if err := protocol.DecodeData(data, d); err != nil {
		return err
	}
	if err := validRoom(d.room()); err != nil {
		return asProtocolError(err)
	}
	return nil
}

// parsePresenceObject checks that raw is a JSON object of at most max
// bytes and returns its members (values as sent, null included). An
// object with two members of the same name, at any depth, is refused
// (bad_request): the merge would keep the last of two top-level names
// while the relayed nested values would be read differently by different
// parsers (see docs/protocol.md).
func parsePresenceObject(raw json.RawMessage, max int) (map[string]json.RawMessage, *protocol.Error) {
	if len(raw) > max {
		return nil, protocol.Errorf(protocol.CodeTooLarge, "presence larger than %d bytes", max)
	}
	var p map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &p) != nil || p == nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "presence must be a JSON object")
	}
	if jsonpatch.CheckUniqueNames(raw) != nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "presence must not have two members of the same name")
	}
	return p, nil
}

// mergePresence is the shallow merge of room:update_presence: a new map
// holding old's members, then patch's members (compacted), with every key
// whose patch value is null removed. old and patch are not modified.
func mergePresence(old, patch map[string]json.RawMessage) map[string]json.RawMessage {
	merged := make(map[string]json.RawMessage, len(old)+len(patch))
	for k, v := range old {
		merged[k] = v
	}
	for k, v := range patch {
		if bytes.Equal(v, []byte("null")) {
			delete(merged, k)
		} else {
			merged[k] = compactJSON(v)
		}
	}
	return merged
}

// encodePresence is the wire form of a merged presence, or too_large when it
// is longer than max bytes.
func encodePresence(p map[string]json.RawMessage, max int) ([]byte, *protocol.Error) {
	enc, err := protocol.Marshal(p)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "presence must be a JSON object")
	}
	if len(enc) > max {
		return nil, protocol.Errorf(protocol.CodeTooLarge, "merged presence larger than %d bytes", max)
	}
	return enc, nil
}

// asProtocolError keeps a *protocol.Error as it is and wraps anything else
// as bad_request.
func asProtocolError(err error) *protocol.Error {
	if pe, ok := err.(*protocol.Error); ok {
		return pe
	}
	return protocol.Errorf(protocol.CodeBadRequest, "%s", err.Error())
}
