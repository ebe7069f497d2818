package chat

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// Message is a chat message on the wire (REST answers and message:create /
// message:update payloads).
type Message struct {
	ID        string  `json:"id"`
	RoomID    string  `json:"room_id"`
	AuthorID  string  `json:"author_id"`
	Content   string  `json:"content"`
	Nonce     string  `json:"nonce,omitempty"`
	CreatedAt string  `json:"created_at"`
	UpdatedAt *string `json:"updated_at,omitempty"`
}

// MessageRef is the message:delete payload.
type MessageRef struct {
	ID     string `json:"id"`
	RoomID string `json:"room_id"`
}

// Limits of the message API.
const (
	MaxNonceChars   = 64
	MaxPageSize     = 100
	DefaultPageSize = 50
)

func wireMessage(m store.Message) Message {
	w := Message{ID: m.ID, RoomID: m.RoomID, AuthorID: m.AuthorID, Content: m.Content, Nonce: m.Nonce,
		CreatedAt: protocol.FormatTime(m.CreatedAt)}
	if m.UpdatedAt != nil {
		u := protocol.FormatTime(*m.UpdatedAt)
		w.UpdatedAt = &u
	}
	return w
}

// now is the server clock at the precision of the wire format, so that what
// a creation answers equals what a later read returns.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// ValidateContent checks a message body: 1 to MessageMaxChars characters,
// counted as they are (no trimming).
func (s *Service) ValidateContent(content string) error {
	n := utf8.RuneCountInString(content)
	if n == 0 {
		return protocol.Errorf(protocol.CodeBadRequest, "content must not be empty")
	}
	if n > s.opts.MessageMaxChars {
		return protocol.Errorf(protocol.CodeTooLarge, "content longer than %d characters", s.opts.MessageMaxChars)
	}
	return nil
}

// OriginConn returns the connection id to leave out of a push made for
// userID: connID when it is one of the user's connections on this node or
// unknown here (it may live on another node), "" when it belongs to
// someone else (a client may only silence its own connection).
func (s *Service) OriginConn(userID, connID string) string {
	if connID == "" || len(connID) > 128 {
		return ""
	}
	if c, ok := s.hub.Conn(connID); ok && c.UserID() != userID {
		return ""
	}
	return connID
}

// push sends a frame to every connection of every member of the room but
// exceptConn.
func (s *Service) push(ctx context.Context, roomID, typ string, data any, exceptConn string) {
	members, err := s.st.Members(ctx, roomID)
	if err != nil {
		s.log.Error("chat: message audience", "room", roomID, "err", err)
		return
	}
	if len(members) > 0 {
		s.broker.ToUsers(members, protocol.Encode(typ, "", data), exceptConn)
	}
}

// PostMessage stores a message by a member and pushes message:create to
// every member's connections but exceptConn; it ends the author's typing
// in the room (typing:stop after the message:create).
// who is the caller (access.Chat is asked of the policy); the author is
// who.UserID.
func (s *Service) PostMessage(ctx context.Context, roomID string, who access.Subject, content, nonce, exceptConn string) (Message, error) {
	authorID := who.UserID
	if err := s.ValidateContent(content); err != nil {
		return Message{}, err
	}
	if utf8.RuneCountInString(nonce) > MaxNonceChars {
		return Message{}, protocol.Errorf(protocol.CodeBadRequest, "nonce longer than %d characters", MaxNonceChars)
	}
	if err := s.requireChat(ctx, roomID, who); err != nil {
		return Message{}, err
	}
	m := store.Message{ID: uuid.Must(uuid.NewV7()).String(), RoomID: roomID, AuthorID: authorID,
		Content: content, Nonce: nonce, CreatedAt: now()}
	if err := s.st.CreateMessage(ctx, m); err != nil {
		return Message{}, s.internal(err, "store message")
	}
	w := wireMessage(m)
	s.emit(EventMessageCreated, w)
	// The request may be cancelled once answered; the pushes still go out.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	s.push(pctx, roomID, protocol.TypeMessageCreate, w, exceptConn)
	s.endTyping(pctx, roomID, authorID)
	return w, nil
}

// ListMessages returns up to limit messages of the room older than before
// ("" for the newest), newest first, and the id to pass as before for the
// next page ("" when there is none). Needs access.Chat (members).
func (s *Service) ListMessages(ctx context.Context, roomID string, who access.Subject, before string, limit int) ([]Message, string, error) {
	if limit < 1 || limit > MaxPageSize {
		return nil, "", protocol.Errorf(protocol.CodeBadRequest, "limit must be 1 to %d", MaxPageSize)
	}
	if err := s.requireChat(ctx, roomID, who); err != nil {
		return nil, "", err
	}
	msgs, err := s.st.ListMessages(ctx, roomID, before, limit+1)
	if err != nil {
		return nil, "", s.internal(err, "list messages")
	}
	next := ""
	if len(msgs) > limit {
		msgs = msgs[:limit]
		next = msgs[limit-1].ID
	}
	out := make([]Message, len(msgs))
	for i, m := range msgs {
		out[i] = wireMessage(m)
	}
	return out, next, nil
}

// authored asks the policy for access.Chat, then loads a message of the
// room and checks that who wrote it (a message-level rule: only its author
// changes a message).
func (s *Service) authored(ctx context.Context, roomID string, who access.Subject, msgID string) error {
	if err := s.requireChat(ctx, roomID, who); err != nil {
		return err
	}
	userID := who.UserID
	m, err := s.st.GetMessage(ctx, roomID, msgID)
	if errors.Is(err, store.ErrNotFound) {
		return protocol.Errorf(protocol.CodeNotFound, "no message %s in room %s", msgID, roomID)
	}
	if err != nil {
		return s.internal(err, "load message")
	}
	if m.AuthorID != userID {
		return protocol.Errorf(protocol.CodeForbidden, "only the author may change message %s", msgID)
	}
	return nil
}

// EditMessage replaces the content of the user's own message and pushes
// message:update (the full message) like PostMessage.
func (s *Service) EditMessage(ctx context.Context, roomID string, who access.Subject, msgID, content, exceptConn string) (Message, error) {
	if err := s.ValidateContent(content); err != nil {
		return Message{}, err
	}
	if err := s.authored(ctx, roomID, who, msgID); err != nil {
		return Message{}, err
	}
	m, err := s.st.UpdateMessage(ctx, roomID, msgID, content, now())
	if errors.Is(err, store.ErrNotFound) {
		return Message{}, protocol.Errorf(protocol.CodeNotFound, "no message %s in room %s", msgID, roomID)
	}
	if err != nil {
		return Message{}, s.internal(err, "update message")
	}
	w := wireMessage(m)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	s.push(pctx, roomID, protocol.TypeMessageUpdate, w, exceptConn)
	return w, nil
}

// DeleteMessage soft-deletes the user's own message and pushes
// message:delete {id, room_id} like PostMessage.
func (s *Service) DeleteMessage(ctx context.Context, roomID string, who access.Subject, msgID, exceptConn string) error {
	if err := s.authored(ctx, roomID, who, msgID); err != nil {
		return err
	}
	err := s.st.DeleteMessage(ctx, roomID, msgID, now())
	if errors.Is(err, store.ErrNotFound) {
		return protocol.Errorf(protocol.CodeNotFound, "no message %s in room %s", msgID, roomID)
	}
	if err != nil {
		return s.internal(err, "delete message")
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	s.push(pctx, roomID, protocol.TypeMessageDelete, MessageRef{ID: msgID, RoomID: roomID}, exceptConn)
	return nil
}
