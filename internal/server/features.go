package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/rs/cors"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/rooms"
	"github.com/parleyhq/parley/internal/store"
)

// wireFeatures registers the feature handlers on the gateway (by message
// type prefix) and the REST API on the mux. This is the map of where each
// message type is handled:
//
//	room:*              internal/rooms (Manager.Handle)
//	typing:*, presence:* internal/chat
//	media:*             internal/media
func (s *Server) wireFeatures(ctx context.Context) error {
	cfg := s.cfg
	s.wireAccess()
	committer := store.NewCommitter(s.Store, store.CommitterOptions{MaxBatch: cfg.CommitMaxBatch, Logger: s.log,
		Panics: s.Metrics, OnBatch: func(n int) { s.Metrics.StorageBatches.Observe(float64(n)) }})
	// Closers run in reverse: the committer drains before the store closes.
	s.closers = append(s.closers, func(context.Context) error { committer.Close(); return nil })

	s.Rooms = rooms.NewManager(rooms.Options{
		PresenceMaxBytes: cfg.PresenceMaxBytes, StorageMaxBytes: cfg.StorageMaxBytes,
		StorageMaxOps: cfg.StorageMaxOps, StorageMaxDepth: cfg.StorageMaxDepth,
		KeepUpdates: cfg.StorageKeepUpdates, KeepUpdatesBytes: cfg.StorageKeepUpdatesBytes, SnapshotEvery: cfg.SnapshotEvery, MaxRoomsPerConn: cfg.MaxRoomsPerConn,
		LargeRoomMembers: cfg.LargeRoomMembers, LargeRoomInterval: cfg.LargeRoomInterval, PresenceCoalesce: cfg.PresenceCoalesce,
		Events: s.webhookEvents(),
	}, s.Store, committer, s.Access, s.Metrics, s.log, s.roomsCluster())
	s.Access.State = append(s.Access.State, s.Rooms)
	s.Gateway.Route("room", roomsGateway{s.Rooms})
	s.Gateway.OnLifecycle(roomsGateway{s.Rooms})

	base := &api.Base{APIKey: cfg.APIKey, Verifier: s.Verifier, MaxBodySize: cfg.RESTMaxBodyBytes, Log: s.log}
	s.handler = withCORS(cfg.CORSOriginList(), base.WriteLimit(api.NewLoginLimiter(cfg.RESTRate, cfg.RESTBurst), s.mux))
	(&api.Storage{Base: base, Rooms: s.Rooms, Access: s.Access}).Register(s.mux)
	if err := s.wireMedia(base); err != nil {
		return fmt.Errorf("media: %w", err)
	}
	s.Access.State = append(s.Access.State, access.StateFunc(func(ctx context.Context, roomID string) (bool, error) {
		if s.calls == nil {
			return false, nil
		}
		return s.calls.CallActive(ctx, roomID) // on any node (media.go)
	}))
	if err := s.wireChat(base); err != nil {
		return err
	}
	return s.wireServerAPI(ctx, base)
}

// wireAccess creates the one access policy (internal/access) over the
// store. The probes of "has state" (PROTOCOL.md v1.1 §7) are the store's
// storage here; rooms and calls add theirs once they exist.
func (s *Server) wireAccess() {
	s.Access = &access.Policy{Dev: s.cfg.Dev, Records: s.Store}
	s.Access.State = append(s.Access.State, access.StateFunc(func(ctx context.Context, roomID string) (bool, error) {
		doc, err := s.Store.LoadDocument(ctx, roomID)
		if err != nil {
			return false, err
		}
		return doc.Version > 0 || len(doc.Updates) > 0, nil
	}))
}

// callAccess ends the call capabilities of a user who lost access.Call in a
// room (a member removed): their connections leave the call (the others get
// media:peer_left; their transports, producers and consumers close), and
// each of those connections gets media:room_closed {room_id}, the frame of
// a call ending, so that its client tears down too. It is the chat layer's
// Calls refresher; a store failure counts as a loss.
type callAccess struct{ s *Server }

func (c callAccess) RefreshUser(ctx context.Context, roomID, userID string) {
	if c.s.calls != nil {
		c.s.calls.RefreshUser(ctx, roomID, userID) // on the call's media node (media.go)
	}
}

// roomsGateway adapts rooms.Manager, which reaches connections only
// through its own Session interface, to the gateway's Handler and
// Lifecycle.
type roomsGateway struct{ m *rooms.Manager }

func (g roomsGateway) Handle(ctx context.Context, s gateway.Session, env protocol.Envelope) error {
	return g.m.Handle(ctx, s, env)
}

func (g roomsGateway) Connected(gateway.Session, bool) {}

func (g roomsGateway) Disconnected(s gateway.Session, last bool) { g.m.Disconnected(s, last) }

// roomsCluster is the cluster rooms uses: nil on a single node.
func (s *Server) roomsCluster() rooms.Cluster {
	if s.Cluster == nil {
		return nil // not a typed nil in the interface
	}
	return s.Cluster
}

// withCORS lets browser pages on the listed origins call the REST API
// (rs/cors handles preflights and the Access-Control-* headers, per the
// Fetch standard's CORS protocol). Tokens travel in the Authorization
// header, not in cookies, so credentials mode is not enabled. No origins:
// h unchanged (same-origin pages only). WebSocket upgrades are not
// subject to CORS: the gateway checks their Origin against the same list
// (gateway.Options.AllowedOrigins).
func withCORS(origins []string, h http.Handler) http.Handler {
	if len(origins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		// X-Connection-Id: a chat post names the writer's connection (§5).
		AllowedHeaders: []string{"Authorization", "Content-Type", "X-Connection-Id"},
		MaxAge:         600, // seconds a browser may cache a preflight answer
	}).Handler(h)
}
