package chat

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/protocol"
)

// typingKey names one user typing in one room.
type typingKey struct{ room, user string }

// typingState is who is typing where. Every transition of one key (start,
// stop, expiry, message post, removal, disconnect) runs under that key's
// stripe lock, decision and broadcast together, so the typing:start and
// typing:stop frames of a key go out in the order of the transitions.
type typingState struct {
	timers  *Timers[typingKey]
	stripes [256]sync.Mutex

	mu     sync.Mutex
	byUser map[string]map[string]struct{} // user → rooms where they type

	// In a cluster: the typers of other nodes (key → node), forgotten on
	// their stop, or a typing timeout plus graceSlack after their last
	// start (remote).
	remote      *Timers[typingKey]
	remoteMu    sync.Mutex
	remoteNodes map[typingKey]string
}

func (t *typingState) init() {
	t.timers = NewTimers[typingKey]()
	t.byUser = make(map[string]map[string]struct{})
	t.remote = NewTimers[typingKey]()
	t.remoteNodes = make(map[typingKey]string)
}

func (t *typingState) remoteSet(k typingKey, node string) {
	t.remoteMu.Lock()
	defer t.remoteMu.Unlock()
	t.remoteNodes[k] = node
}

// remoteDel forgets k if node ("" for any) holds it.
func (t *typingState) remoteDel(k typingKey, node string) bool {
	t.remoteMu.Lock()
	defer t.remoteMu.Unlock()
	if n, ok := t.remoteNodes[k]; ok && (node == "" || n == node) {
		delete(t.remoteNodes, k)
		return true
	}
	return false
}

// remoteOf takes node's typers out of the table.
func (t *typingState) remoteOf(node string) []typingKey {
	t.remoteMu.Lock()
	defer t.remoteMu.Unlock()
	var out []typingKey
	for k, n := range t.remoteNodes {
		if n == node {
			out = append(out, k)
			delete(t.remoteNodes, k)
		}
	}
	return out
}

func (t *typingState) index(k typingKey, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rooms := t.byUser[k.user]
	if on {
		if rooms == nil {
			rooms = make(map[string]struct{}, 1)
			t.byUser[k.user] = rooms
		}
		rooms[k.room] = struct{}{}
		return
	}
	delete(rooms, k.room)
	if len(rooms) == 0 {
		delete(t.byUser, k.user)
	}
}

func (t *typingState) roomsOf(user string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.byUser[user]))
	for r := range t.byUser[user] {
		out = append(out, r)
	}
	return out
}

type typingData struct {
	RoomID string `json:"room_id"`
}

type typingEvent struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
}

func (s *Service) typingLock(k typingKey) *sync.Mutex {
	return s.stripe(s.typing.stripes[:], k.room, k.user)
}

// decodeTyping decodes and validates the data of typing:start and
// typing:stop, {room_id} (PROTOCOL.md §5): bad_request for anything else.
func decodeTyping(data json.RawMessage) (string, error) {
	var d typingData
	if perr := protocol.DecodeData(data, &d); perr != nil {
		return "", perr
	}
	if err := protocol.CheckRoomID("room_id", d.RoomID); err != nil {
		return "", err
	}
	return d.RoomID, nil
}

// handleTyping serves typing:start (start=true) and typing:stop.
func (s *Service) handleTyping(ctx context.Context, sess gateway.Session, env protocol.Envelope, start bool) error {
	roomID, err := decodeTyping(env.Data)
	if err != nil {
		return err
	}
	k := typingKey{room: roomID, user: sess.UserID()}
	mu := s.typingLock(k)
	mu.Lock()
	defer mu.Unlock()
	// Checked under the key's lock: a removal stores first and then ends
	// typing under the same lock, so a start cannot slip in after it.
	who := access.User(sess.Claims())
	who.UserID = sess.UserID()
	if err := s.requireChat(ctx, k.room, who); err != nil {
		return err
	}
	if !start {
		if s.typing.timers.Delete(k) {
			s.typing.index(k, false)
			s.sendTyping(ctx, protocol.TypeTypingStop, k)
			s.publishTyping(typingOpStop, k)
		} else {
			s.publishTyping(typingOpEnd, k) // started through another node?
		}
		return nil
	}
	if s.typing.timers.Set(k, time.Now().Add(s.opts.TypingTimeout)) {
		s.typing.index(k, true)
		s.sendTyping(ctx, protocol.TypeTypingStart, k)
	}
	s.publishTyping(typingOpStart, k) // renewals too: the other nodes' table expires
	return nil
}

// sendTyping tells every other member of the room. Needs the key's lock.
func (s *Service) sendTyping(ctx context.Context, typ string, k typingKey) {
	others, err := s.othersOf(ctx, k.room, k.user)
	if err != nil {
		s.log.Error("chat: typing audience", "room", k.room, "err", err)
		return
	}
	if len(others) == 0 {
		return
	}
	s.broker.ToUsers(others, protocol.Encode(typ, "", typingEvent{RoomID: k.room, UserID: k.user}), "")
}

// endTyping ends the user's typing in the room, if any, with a typing:stop
// to the other members. In a cluster, typing started through another node
// is ended by that node (one typing:stop): the end is published to it.
func (s *Service) endTyping(ctx context.Context, roomID, userID string) {
	k := typingKey{room: roomID, user: userID}
	if !s.endTypingHere(ctx, k) {
		s.publishTyping(typingOpEnd, k)
	}
}

// endTypingHere ends typing started through this node; it reports
// whether there was one.
func (s *Service) endTypingHere(ctx context.Context, k typingKey) bool {
	mu := s.typingLock(k)
	mu.Lock()
	defer mu.Unlock()
	if s.typing.timers.Delete(k) {
		s.typing.index(k, false)
		s.sendTyping(ctx, protocol.TypeTypingStop, k)
		s.publishTyping(typingOpStop, k)
		return true
	}
	return false
}

// endUserTyping ends the user's typing started through this node.
func (s *Service) endUserTyping(ctx context.Context, userID string) {
	for _, room := range s.typing.roomsOf(userID) {
		s.endTypingHere(ctx, typingKey{room: room, user: userID})
	}
}

// typingExpired is the expiry callback: the start was not renewed in time.
func (s *Service) typingExpired(k typingKey) {
	mu := s.typingLock(k)
	mu.Lock()
	defer mu.Unlock()
	if !s.typing.timers.Settle(k) {
		return // renewed or stopped meanwhile
	}
	s.typing.index(k, false)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s.sendTyping(ctx, protocol.TypeTypingStop, k)
	s.publishTyping(typingOpStop, k)
}
