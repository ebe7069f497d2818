package server

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/rooms"
	"github.com/parleyhq/parley/internal/webhook"
)

// The server API's live side (docs/server-api.md) and the webhooks
// (internal/webhook). Broadcasts and connection lists go through the
// room's owner (rooms.Manager); the live-room list and disconnects ask
// every live node (cluster.Node.Gather on <cluster>.node.<id>.api) and
// add the answers up. On a single node everything is local.

// gatherTimeout bounds the wait for the other nodes' answers.
const gatherTimeout = 3 * time.Second

// liveAPI implements api.Live.
type liveAPI struct{ s *Server }

func (l liveAPI) Broadcast(ctx context.Context, roomID string, ev json.RawMessage) (int, error) {
	return l.s.Rooms.BroadcastEvent(ctx, roomID, ev)
}

func (l liveAPI) Connections(ctx context.Context, roomID, after string, limit int) (rooms.ConnectionsPage, error) {
	return l.s.Rooms.Connections(ctx, roomID, after, limit)
}

func (l liveAPI) LiveRooms(ctx context.Context, after string, limit int) (api.LiveRoomsPage, error) {
	var parts []api.NodeLiveRoomsAnswer
	var missing []string
	if l.s.Cluster == nil {
		items, more := l.s.Rooms.OwnedLiveRooms(after, limit)
		parts = append(parts, api.NodeLiveRoomsAnswer{Items: items, More: more})
	} else {
		q, _ := protocol.Marshal(api.NodeLiveRooms{After: after, Limit: limit})
		gctx, cancel := context.WithTimeout(ctx, gatherTimeout)
		answers, miss := l.s.Cluster.Gather(gctx, api.NodeOpLiveRooms, q)
		cancel()
		missing = miss
		for node, b := range answers {
			a, err := api.DecodeNodeLiveRoomsAnswer(b)
			if err != nil {
				l.s.log.Warn("server API: live rooms answer", "node", node, "err", err)
				missing = append(missing, node)
				continue
			}
			parts = append(parts, a)
		}
		sort.Strings(missing)
	}
	return mergeLiveRooms(parts, limit, missing), nil
}

// mergeLiveRooms merges the nodes' sorted pages into one page of at most
// limit rooms (a room listed twice, while it changes owner, once, with the
// larger count).
func mergeLiveRooms(parts []api.NodeLiveRoomsAnswer, limit int, missing []string) api.LiveRoomsPage {
	byID := map[string]int{}
	more := false
	for _, p := range parts {
		more = more || p.More
		for _, r := range p.Items {
			if r.Connections > byID[r.RoomID] {
				byID[r.RoomID] = r.Connections
			}
		}
	}
	items := make([]rooms.LiveRoom, 0, len(byID))
	for id, n := range byID {
		items = append(items, rooms.LiveRoom{RoomID: id, Connections: n})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].RoomID < items[j].RoomID })
	if len(items) > limit {
		items, more = items[:limit], true
	}
	page := api.LiveRoomsPage{Items: items, MissingNodes: missing}
	if more && len(items) > 0 {
		next := items[len(items)-1].RoomID
		page.NextAfter = &next
	}
	return page
}

func (l liveAPI) Disconnect(ctx context.Context, userID, reason string) (api.DisconnectResult, error) {
	if l.s.Cluster == nil {
		return api.DisconnectResult{Closed: l.s.disconnectLocal(userID, reason)}, nil
	}
	q, _ := protocol.Marshal(api.NodeDisconnect{UserID: userID, Reason: reason})
	gctx, cancel := context.WithTimeout(ctx, gatherTimeout)
	answers, missing := l.s.Cluster.Gather(gctx, api.NodeOpDisconnect, q)
	cancel()
	res := api.DisconnectResult{MissingNodes: missing}
	for node, b := range answers {
		var a api.DisconnectResult
		if err := json.Unmarshal(b, &a); err != nil {
			l.s.log.Warn("server API: disconnect answer", "node", node, "err", err)
			res.MissingNodes = append(res.MissingNodes, node)
			continue
		}
		res.Closed += a.Closed
	}
	sort.Strings(res.MissingNodes)
	return res, nil
}

// disconnectLocal closes every connection of userID on this node with
// 4003 and reason, and returns how many.
func (s *Server) disconnectLocal(userID, reason string) int {
	n := 0
	for _, c := range s.Hub.ConnsOfUser(userID) {
		if cc, ok := c.(interface {
			StartClose(code int, msg string) bool
		}); ok && cc.StartClose(protocol.CloseDisconnected, reason) {
			n++
		}
	}
	if n > 0 {
		s.log.Info("server API: user disconnected", "user", userID, "connections", n)
	}
	return n
}

// nodeAPI answers the other nodes' server-API questions
// (cluster.APIHandler).
func (s *Server) nodeAPI(op string, body []byte) ([]byte, error) {
	switch op {
	case api.NodeOpLiveRooms:
		q, err := api.DecodeNodeLiveRooms(body)
		if err != nil {
			return nil, err
		}
		items, more := s.Rooms.OwnedLiveRooms(q.After, q.Limit)
		return protocol.Marshal(api.NodeLiveRoomsAnswer{Items: items, More: more})
	case api.NodeOpDisconnect:
		q, err := api.DecodeNodeDisconnect(body)
		if err != nil {
			return nil, err
		}
		return protocol.Marshal(api.DisconnectResult{Closed: s.disconnectLocal(q.UserID, q.Reason)})
	}
	return nil, protocol.Errorf(protocol.CodeBadRequest, "unknown server-API op %q", op)
}

// wireServerAPI serves the server API's live routes and, in a cluster,
// answers the other nodes on this node's API subject.
func (s *Server) wireServerAPI(ctx context.Context, base *api.Base) error {
	if s.Cluster != nil {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := s.Cluster.StartAPI(sctx, s.nodeAPI); err != nil {
			return err
		}
	}
	(&api.ServerAPI{Base: base, Live: liveAPI{s}, MaxEventBytes: s.cfg.MaxMessageBytes}).Register(s.mux)
	return nil
}

// newWebhooks creates the webhook sender from the config (nil when no
// URL is set).
func (s *Server) newWebhooks() {
	c := s.cfg
	s.Webhooks = webhook.New(webhook.Options{URLs: c.WebhookURLList(), Secret: []byte(c.WebhookSecret),
		QueueSize: c.WebhookQueueSize, Timeout: c.WebhookTimeout, RetryFor: c.WebhookRetryFor,
		Concurrency: c.WebhookConcurrency, Counters: s.Metrics, Panics: s.Metrics,
		Log: s.log.With("component", "webhook")})
	if s.Webhooks != nil {
		s.Webhooks.Start()
		s.log.Info("webhooks on", "urls", len(c.WebhookURLList()))
	}
}

// webhookEvents is the emitter for rooms and chat: nil (not a typed nil)
// when webhooks are off, so that they build no event data.
func (s *Server) webhookEvents() webhook.Emitter {
	if s.Webhooks == nil {
		return nil
	}
	return s.Webhooks
}

// emit sends a webhook event when webhooks are on.
func (s *Server) emit(event string, data any) {
	s.Webhooks.Emit(event, data) // nil-safe
}

// CallEvent is the data of call.started (StartedBy set) and call.ended.
type CallEvent struct {
	RoomID    string `json:"room_id"`
	StartedBy string `json:"started_by,omitempty"`
}

// ParticipantEvent is the data of call.participant_joined and _left.
type ParticipantEvent struct {
	RoomID       string `json:"room_id"`
	ConnectionID string `json:"connection_id"`
	UserID       string `json:"user_id"`
}

// ParticipantJoined implements media.ParticipantEvents (on the call's
// media node: once per participant in a cluster).
func (e callEvents) ParticipantJoined(roomID, connID, userID string) {
	e.s.emit(webhook.CallParticipantJoined, ParticipantEvent{RoomID: roomID, ConnectionID: connID, UserID: userID})
}

// ParticipantLeft implements media.ParticipantEvents.
func (e callEvents) ParticipantLeft(roomID, connID, userID string) {
	e.s.emit(webhook.CallParticipantLeft, ParticipantEvent{RoomID: roomID, ConnectionID: connID, UserID: userID})
}
