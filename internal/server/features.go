package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/auth"
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
	committer := store.NewCommitter(s.Store, store.CommitterOptions{MaxBatch: cfg.CommitMaxBatch, Logger: s.log,
		Panics: s.Metrics, OnBatch: func(n int) { s.Metrics.StorageBatches.Observe(float64(n)) }})
	// Closers run in reverse: the committer drains before the store closes.
	s.closers = append(s.closers, func(context.Context) error { committer.Close(); return nil })

	s.Rooms = rooms.NewManager(rooms.Options{
		PresenceMaxBytes: cfg.PresenceMaxBytes, StorageMaxBytes: cfg.StorageMaxBytes,
		StorageMaxOps: cfg.StorageMaxOps, StorageMaxDepth: cfg.StorageMaxDepth,
		KeepUpdates: cfg.StorageKeepUpdates, KeepUpdatesBytes: cfg.StorageKeepUpdatesBytes, SnapshotEvery: cfg.SnapshotEvery, MaxRoomsPerConn: cfg.MaxRoomsPerConn,
	}, s.Store, committer, s.roomAccess, s.Metrics, s.log)
	s.Gateway.Route("room", s.Rooms)
	s.Gateway.OnLifecycle(s.Rooms)

	base := &api.Base{APIKey: cfg.APIKey, Verifier: s.Verifier, MaxBodySize: cfg.RESTMaxBodyBytes, Log: s.log}
	s.handler = base.WriteLimit(api.NewLoginLimiter(cfg.RESTRate, cfg.RESTBurst), s.mux)
	(&api.Storage{Base: base, Rooms: s.Rooms, Access: s.roomAccess}).Register(s.mux)
	if err := s.wireMedia(base); err != nil {
		return fmt.Errorf("media: %w", err)
	}
	if err := s.wireChat(base); err != nil {
		return err
	}
	return nil
}

// roomAccess grants everything to members of a room and to anyone in an
// open room (every room is open in dev mode).
func (s *Server) roomAccess(ctx context.Context, userID, roomID string) (auth.Perm, error) {
	if s.cfg.Dev {
		return auth.PermAll, nil
	}
	room, err := s.Store.GetRoom(ctx, roomID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if room.Open {
		return auth.PermAll, nil
	}
	member, err := s.Store.IsMember(ctx, roomID, userID)
	if err != nil {
		return 0, err
	}
	if member {
		return auth.PermAll, nil
	}
	return 0, nil
}
