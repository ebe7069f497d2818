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
	// In a cluster (Options.Cluster), the status entry it comes from:
	// its revision, state (shownOnline or shownGrace), and for a grace its
	// end (Unix ms) and the node that started it.
	rev   uint64
	state string
	until int64
	by    string
}

// presenceState is the presence of this node's users. Transitions of one
// user run under that user's stripe lock.
type presenceState struct {
	grace   *Timers[string] // users in their offline grace period
	flush   *Timers[string] // users whose next broadcast to others is due (coalescing)
	stripes [256]sync.Mutex

	mu    sync.Mutex
	users map[string]*userPresence // connected or in grace
	// shown is what the other users were last sent of a user and when:
	// users connected, in grace, or offline for less than one update
	// interval. An entry is read and written only under its user's
	// stripe lock (mu guards the map).
	shown map[string]shownState
}

// shownState is the last presence:update the others got of a user.
type shownState struct {
	value string    // as others see it (never invisible)
	at    time.Time // when it was sent
}

func (p *presenceState) init() {
	p.grace = NewTimers[string]()
	p.flush = NewTimers[string]()
	p.users = make(map[string]*userPresence)
	p.shown = make(map[string]shownState)
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

func (p *presenceState) getShown(user string) (shownState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sh, ok := p.shown[user]
	return sh, ok
}

func (p *presenceState) setShown(user string, sh shownState, keep bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !keep {
		delete(p.shown, user)
		return
	}
	p.shown[user] = sh
}

// seenNow is what others should see of user now: offline when not
// connected (after the grace), invisible shown as offline.
func (p *presenceState) seenNow(user string) string {
	if up := p.get(user); up != nil {
		return seenByOthers(up.chosen)
	}
	return StatusOffline
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
	if s.opts.Cluster != nil {
		s.syncPresence(user, sess.ID())
		return
	}
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
	s.emit(EventUserOnline, UserEvent{UserID: user})
	s.publish(ctx, user, chosen, sess.ID())
}

// presenceDisconnected starts the user's grace period (their last
// connection here closed).
func (s *Service) presenceDisconnected(user string) {
	if s.opts.Cluster != nil {
		s.syncPresence(user, "")
		return
	}
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
	if s.opts.Cluster != nil {
		if s.pres.grace.Settle(user) {
			s.graceEnded(user)
		}
		return
	}
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	if !s.pres.grace.Settle(user) || s.hub.UserOnline(user) {
		return
	}
	if s.pres.get(user) == nil {
		return
	}
	s.pres.put(user, nil)
	s.emit(EventUserOffline, UserEvent{UserID: user})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s.publish(ctx, user, "", "")
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
	if s.opts.Cluster != nil {
		return s.clusterSetStatus(ctx, sess, user, status)
	}
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	if err := s.setChosenStatus(ctx, user, status); err != nil {
		return s.internal(err, "store status")
	}
	s.pres.put(user, &userPresence{chosen: status}) // never mutated once stored
	// The user's other connections see the chosen status at once; the
	// sender gets the ack; the others, coalesced.
	s.publish(ctx, user, status, sess.ID())
	return nil
}

// publish tells of the user's status; it runs under the user's stripe
// lock after their state changed. own (their chosen status), when not "",
// goes at once to their own connections except exceptConn. What everyone
// else sees (seenNow: invisible is offline) is coalesced per user
// (Options.PresenceUpdateInterval): it goes out at once when nothing was
// sent to them within the interval, else once at the end of that interval
// (flushExpired) with the value current then, and never when it equals
// what they were last sent.
func (s *Service) publish(ctx context.Context, user, own, exceptConn string) {
	after := s.pres.seenNow(user)
	gone := s.pres.get(user) == nil
	last, ok := s.pres.getShown(user)
	if !ok {
		last.value = StatusOffline
	}
	iv := s.opts.PresenceUpdateInterval
	now := time.Now()
	others := ""
	switch {
	case after == last.value:
		// Offline to everyone and gone: forget the user, unless an
		// interval is running (its end forgets them): forgetting sooner
		// would let a reconnect go out at once within the interval.
		if gone && !s.pres.flush.Has(user) {
			s.pres.setShown(user, shownState{}, false)
		}
	case iv > 0 && ok && now.Before(last.at.Add(iv)):
		// One trailing send at the end of the interval (usually already
		// scheduled by the last send).
		if !s.pres.flush.Has(user) {
			s.pres.flush.Set(user, last.at.Add(iv))
		}
	default:
		others = after
		s.shownSent(user, after, now, gone)
	}
	s.send(ctx, user, own, others, exceptConn)
}

// shownSent records that the others are being sent value now. With
// coalescing on, the flush timer ends the interval that starts: it makes
// the trailing send, or forgets a user who is gone.
func (s *Service) shownSent(user, value string, now time.Time, gone bool) {
	if iv := s.opts.PresenceUpdateInterval; iv > 0 {
		s.pres.setShown(user, shownState{value: value, at: now}, true)
		s.pres.flush.Set(user, now.Add(iv))
		return
	}
	s.pres.setShown(user, shownState{value: value, at: now}, !gone)
}

// flushExpired ends a user's coalescing interval: the others get what they
// should see now if it differs from what they were last sent (then a new
// interval starts); a user offline and gone is forgotten.
func (s *Service) flushExpired(user string) {
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	if !s.pres.flush.Settle(user) {
		return
	}
	after := s.pres.seenNow(user)
	gone := s.pres.get(user) == nil
	last, ok := s.pres.getShown(user)
	if !ok {
		last.value = StatusOffline
	}
	if after == last.value {
		if gone {
			s.pres.setShown(user, shownState{}, false)
		}
		return
	}
	s.shownSent(user, after, time.Now(), gone)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s.send(ctx, user, "", after, "")
}

// send delivers a status: own to the user's own connections except
// exceptConn when not "", others to the audience when not "". One encoding
// serves both when they are equal and the audience is everyone.
func (s *Service) send(ctx context.Context, user, own, others, exceptConn string) {
	if own == "" && others == "" {
		return
	}
	all := s.opts.PresenceAudience != AudienceShared
	if others != "" && all && own == others {
		// Everyone, the user's own connections included, sees the same.
		// (Not used when own is "": a connection of the user may be
		// registering right now and must not see the others' view.)
		s.toAll(protocol.Encode(protocol.TypePresenceUpdate, "", PresenceEvent{UserID: user, Presence: others}), exceptConn)
		return
	}
	if own != "" {
		s.toUsers([]string{user}, protocol.Encode(protocol.TypePresenceUpdate, "",
			PresenceEvent{UserID: user, Presence: own}), exceptConn)
	}
	if others == "" {
		return
	}
	var audience []string
	if _, users := s.hub.Counts(); s.opts.Cluster != nil && users == 0 {
		return // in a cluster each node tells its own connections only
	}
	if all {
		// Every connected user but this one: the broker's ToAll cannot
		// leave out one user's connections, and an invisible user's own
		// connections must see "invisible", not what the others see.
		audience = slices.DeleteFunc(s.hub.ConnectedUsers(), func(u string) bool { return u == user })
	} else {
		audience = s.sharingUsers(ctx, user)
	}
	if len(audience) > 0 {
		s.toUsers(audience, protocol.Encode(protocol.TypePresenceUpdate, "",
			PresenceEvent{UserID: user, Presence: others}), "")
	}
}

// sharingUsers returns the users who share a room with user (not user):
// fellow members of the rooms created over REST that user is a member of.
// Live room clients and token grants do not count.
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
