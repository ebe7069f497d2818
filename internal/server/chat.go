package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/chat"
)

// wireChat creates the chat layer (internal/chat): the typing:* and
// presence:* handlers and their connection lifecycle on the gateway, the
// accounts, token, room, message and presence REST endpoints, and a closer
// that stops the chat's expiry goroutines.
func (s *Server) wireChat(base *api.Base) error {
	cfg := s.cfg
	var cl chat.Cluster
	if s.Cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := s.Cluster.Status(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("chat: %w", err)
		}
		cl = st
	}
	svc := chat.New(chat.Options{Cluster: cl,
		Store: s.Store, Broker: s.Broker, Hub: s.Hub, Rooms: s.Rooms, Calls: callAccess{s}, Access: s.Access, Log: s.log, Panics: s.Metrics,
		TypingTimeout: cfg.TypingTimeout, PresenceOfflineGrace: cfg.PresenceOfflineGrace,
		PresenceAudience: cfg.PresenceAudience, PresenceUpdateInterval: cfg.PresenceUpdateInterval,
		MessageMaxChars: cfg.MessageMaxChars,
		// One node is the only writer of statuses unless clustered.
		CacheStatus: cfg.Broker == "local",
		Events:      s.webhookEvents(),
	})
	err := s.Metrics.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_typing_active", Help: "Typing indicators currently active.",
	}, func() float64 { return float64(svc.TypingActive()) }))
	if are := (prometheus.AlreadyRegisteredError{}); err != nil && !errors.As(err, &are) {
		return fmt.Errorf("chat metrics: %w", err)
	}
	s.Gateway.Route("typing", svc)
	s.Gateway.Route("presence", svc)
	s.Gateway.OnLifecycle(svc)

	(&api.Accounts{Base: base, Store: s.Store, Signer: s.Signer, AccessTTL: cfg.AccessTokenTTL,
		RefreshTTL: cfg.RefreshTokenTTL, Limits: s.accountLimits()}).Register(s.mux)
	(&api.Tokens{Base: base, Signer: s.Signer, DefaultTTL: cfg.AccessTokenTTL}).Register(s.mux)
	(&api.ChatRooms{Base: base, Store: s.Store, Chat: svc, Access: s.Access}).Register(s.mux)
	(&api.Messages{Base: base, Chat: svc}).Register(s.mux)
	(&api.Presence{Base: base, Chat: svc}).Register(s.mux)

	svc.Start()
	s.closers = append(s.closers, func(context.Context) error { svc.Close(); return nil })
	return nil
}
