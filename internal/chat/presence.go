package chat

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/protocol"
)

// User statuses.
const (
	StatusOnline    = "online"
	StatusIdle      = "idle"
	StatusDND       = "dnd"
	StatusOffline   = "offline"
	StatusInvisible = "invisible"
)

// Presence audiences (config presence-audience).
const (
	AudienceAll    = "all"
	AudienceShared = "shared"
)

// ValidStatus reports whether s is a status a user may choose.
func ValidStatus(s string) bool {
	switch s {
	case StatusOnline, StatusIdle, StatusDND, StatusOffline, StatusInvisible:
		return true
	}
	return false
}

// userPresence is a user who is connected here or within their offline
// grace period (others still see their chosen status). It is immutable once
// stored: a change stores a new one.
type userPresence struct {
	chosen string // the stored status
}

// presenceState is the presence of this node's users. Transitions of one
// user run under that user's stripe lock.
type presenceState struct {
	grace   *Timers[string] // users in their offline grace period
	stripes [256]sync.Mutex

	mu    sync.Mutex
	users map[string]*userPresence // connected or in grace
}

func (p *presenceState) init() {
	p.grace = NewTimers[string]()
	p.users = make(map[string]*userPresence)
}

func (p *presenceState) get(user string) *userPresence {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.users[user]
}

func (p *presenceState) put(user string, up *userPresence) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up == nil {
		delete(p.users, user)
		return
	}
	p.users[user] = up
}

// seenByOthers is what every other user sees of a chosen status while the
// user is shown: invisible is offline.
func seenByOthers(chosen string) string {
	if chosen == StatusInvisible {
		return StatusOffline
	}
	return chosen
}

// PresenceEvent is the presence:update payload and a GET /api/presence item.
type PresenceEvent struct {
	UserID   string `json:"user_id"`
	Presence string `json:"presence"`
}

type presenceData struct {
	Presence string `json:"presence"`
}

func (s *Service) presenceLock(user string) *sync.Mutex {
	return s.stripe(s.pres.stripes[:], user)
}

// presenceConnected: the first connection of a user makes them shown with
// their stored status (default online) and tells the audience; a reconnect
// within the grace period cancels the pending offline silently. The new
// connection itself is not sent its own status (GET /api/presence answers
// it, invisible included).
func (s *Service) presenceConnected(sess gateway.Session) {
	user := sess.UserID()
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	up := s.pres.get(user)
	if up != nil {
		s.pres.grace.Delete(user)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	chosen, err := s.chosenStatus(ctx, user)
	if err != nil {
		s.log.Error("chat: load user status", "user", user, "err", err)
	}
	if !ValidStatus(chosen) {
		chosen = StatusOnline
	}
	s.pres.put(user, &userPresence{chosen: chosen})
	s.publish(ctx, user, chosen, StatusOffline, seenByOthers(chosen), sess.ID())
}

// presenceDisconnected starts the user's grace period (their last
// connection here closed).
func (s *Service) presenceDisconnected(user string) {
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	if s.hub.UserOnline(user) || s.pres.get(user) == nil {
		return // reconnected meanwhile
	}
	s.pres.grace.Set(user, time.Now().Add(s.opts.PresenceOfflineGrace))
}

// graceExpired: the user did not come back; they are offline.
func (s *Service) graceExpired(user string) {
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	if !s.pres.grace.Settle(user) || s.hub.UserOnline(user) {
		return
	}
	up := s.pres.get(user)
	s.pres.put(user, nil)
	if up == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s.publish(ctx, user, "", seenByOthers(up.chosen), StatusOffline, "")
}

// decodePresence decodes and validates the data of presence:update,
// {presence} with one of online, idle, dnd, offline, invisible (PROTOCOL.md
// §5): bad_request for anything else.
func decodePresence(data json.RawMessage) (string, error) {
	var d presenceData
	if perr := protocol.DecodeData(data, &d); perr != nil {
		return "", perr
	}
	if !ValidStatus(d.Presence) {
		return "", protocol.Errorf(protocol.CodeBadRequest, "presence must be one of online, idle, dnd, offline, invisible")
	}
	return d.Presence, nil
}

// handlePresence serves presence:update.
func (s *Service) handlePresence(ctx context.Context, sess gateway.Session, env protocol.Envelope) error {
	status, err := decodePresence(env.Data)
	if err != nil {
		return err
	}
	user := sess.UserID()
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	if err := s.setChosenStatus(ctx, user, status); err != nil {
		return s.internal(err, "store status")
	}
	before := StatusOffline
	if up := s.pres.get(user); up != nil {
		before = seenByOthers(up.chosen)
	}
	s.pres.put(user, &userPresence{chosen: status}) // never mutated once stored
	// The user's other connections see the chosen status; the sender gets
	// the ack.
	s.publish(ctx, user, status, before, seenByOthers(status), sess.ID())
	return nil
}

// publish sends the user's status: own (their chosen status) to their own
// connections except exceptConn when own is not "", and after (what
// everyone else sees) to the audience when it differs from before. One
// encoding serves both when they are equal and the audience is everyone.
func (s *Service) publish(ctx context.Context, user, own, before, after, exceptConn string) {
	changed := before != after
	if !changed && own == "" {
		return
	}
	all := s.opts.PresenceAudience != AudienceShared
	if changed && all && own == after {
		// Everyone, the user's own connections included, sees the same.
		// (Not used when own is "": a connection of the user may be
		// registering right now and must not see the others' view.)
		s.broker.ToAll(protocol.Encode(protocol.TypePresenceUpdate, "", PresenceEvent{UserID: user, Presence: after}), exceptConn)
		return
	}
	if own != "" {
		s.broker.ToUsers([]string{user}, protocol.Encode(protocol.TypePresenceUpdate, "",
			PresenceEvent{UserID: user, Presence: own}), exceptConn)
	}
	if !changed {
		return
	}
	var audience []string
	if all {
		// Every connected user but this one: the broker's ToAll cannot
		// leave out one user's connections, and an invisible user's own
		// connections must see "invisible", not what the others see.
		audience = slices.DeleteFunc(s.hub.ConnectedUsers(), func(u string) bool { return u == user })
	} else {
		audience = s.sharingUsers(ctx, user)
	}
	if len(audience) > 0 {
		s.broker.ToUsers(audience, protocol.Encode(protocol.TypePresenceUpdate, "",
			PresenceEvent{UserID: user, Presence: after}), "")
	}
}

// sharingUsers returns the users who share a room with user (not user).
func (s *Service) sharingUsers(ctx context.Context, user string) []string {
	rooms, err := s.st.RoomsOfUser(ctx, user)
	if err != nil {
		s.log.Error("chat: presence audience", "user", user, "err", err)
		return nil
	}
	seen := map[string]struct{}{user: {}}
	var out []string
	for _, r := range rooms {
		members, err := s.st.Members(ctx, r.ID)
		if err != nil {
			s.log.Error("chat: presence audience", "room", r.ID, "err", err)
			continue
		}
		for _, m := range members {
			if _, dup := seen[m]; !dup {
				seen[m] = struct{}{}
				out = append(out, m)
			}
		}
	}
	return out
}

// Statuses returns the status of each user as viewer sees it: offline when
// not connected (after the grace period), invisible shown as offline,
// except that viewers see their own chosen status (invisible included)
// while connected. With the "shared" audience (--presence-audience), the
// same audience as presence:update frames: a user who shares no room with
// viewer is shown offline. viewer "" is the server API key, which sees
// every status as other users do. A store failure shows everyone but the
// viewer offline (never more than the audience allows).
func (s *Service) Statuses(ctx context.Context, viewer string, userIDs []string) []PresenceEvent {
	var audience map[string]struct{}
	if s.opts.PresenceAudience == AudienceShared && viewer != "" {
		audience = map[string]struct{}{viewer: {}}
		for _, u := range s.sharingUsers(ctx, viewer) {
			audience[u] = struct{}{}
		}
	}
	out := make([]PresenceEvent, 0, len(userIDs))
	for _, u := range userIDs {
		st := StatusOffline
		if _, shared := audience[u]; audience != nil && !shared {
			out = append(out, PresenceEvent{UserID: u, Presence: st})
			continue
		}
		if up := s.pres.get(u); up != nil {
			if u == viewer {
				st = up.chosen
			} else {
				st = seenByOthers(up.chosen)
			}
		}
		out = append(out, PresenceEvent{UserID: u, Presence: st})
	}
	return out
}

// statusCache holds chosen statuses ("" = never set) when Options.CacheStatus
// is on. It is bounded: past statusCacheMax entries it starts over.
type statusCache struct {
	mu sync.Mutex
	m  map[string]string
}

const statusCacheMax = 200_000

// chosenStatus returns the user's stored status, from memory when cached.
func (s *Service) chosenStatus(ctx context.Context, user string) (string, error) {
	if s.opts.CacheStatus {
		s.status.mu.Lock()
		st, ok := s.status.m[user]
		s.status.mu.Unlock()
		if ok {
			return st, nil
		}
	}
	st, err := s.st.GetUserStatus(ctx, user)
	if err == nil {
		s.cacheStatus(user, st)
	}
	return st, err
}

// setChosenStatus stores the status, then caches it.
func (s *Service) setChosenStatus(ctx context.Context, user, status string) error {
	if err := s.st.SetUserStatus(ctx, user, status); err != nil {
		return err
	}
	s.cacheStatus(user, status)
	return nil
}

func (s *Service) cacheStatus(user, status string) {
	if !s.opts.CacheStatus {
		return
	}
	s.status.mu.Lock()
	if s.status.m == nil || len(s.status.m) >= statusCacheMax {
		s.status.m = make(map[string]string)
	}
	s.status.m[user] = status
	s.status.mu.Unlock()
}
