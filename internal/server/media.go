package server

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/protocol"
)

// wireMedia creates the SFU, routes media:* messages to it (after the
// membership check), tells it about closed connections, and serves the call
// endpoints.
func (s *Server) wireMedia(base *api.Base) error {
	cfg := s.cfg
	mc := media.Config{
		Workers: cfg.MediaWorkers, ListenIP: cfg.MediaListenIP, AnnouncedIP: cfg.MediaAnnouncedIP,
		RTCMinPort: uint16(cfg.MediaRTCMinPort), RTCMaxPort: uint16(cfg.MediaRTCMaxPort),
		UDPMuxPort: cfg.MediaUDPPort, TCPPort: cfg.MediaTCPPort, IncludeLoopback: cfg.MediaLoopback,
		TURNUsername: cfg.TURNUsername, TURNPassword: cfg.TURNPassword,
		TURNSharedSecret: cfg.TURNSharedSecret, TURNCredentialTTL: cfg.TURNCredentialTTL, ForceRelay: cfg.TURNForceRelay,
		EmbeddedTURN: media.EmbeddedTURN{Enabled: cfg.TURNEmbedded, ListenIP: cfg.TURNEmbeddedListen,
			Port: cfg.TURNEmbeddedPort, Realm: cfg.TURNEmbeddedRealm, RelayIP: cfg.MediaAnnouncedIP},
	}
	for _, u := range strings.Split(cfg.TURNURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			mc.TURNURLs = append(mc.TURNURLs, u)
		}
	}
	sfu, err := media.New(mc, hubSender{s}, callEvents{s}, s.log.With("component", "media"))
	if err != nil {
		return err
	}
	s.SFU = sfu
	s.closers = append(s.closers, func(context.Context) error { return sfu.Close() })
	s.Gateway.Route("media", gateway.HandlerFunc(s.handleMedia))
	s.Gateway.OnLifecycle(mediaLifecycle{sfu})
	(&api.Calls{Base: base, SFU: sfu, Hub: s.Hub, Access: s.Access}).Register(s.mux)
	return nil
}

// handleMedia routes media:* to the SFU after asking the policy for
// access.Call (members; every user in dev mode; PROTOCOL.md §6). Errors:
// bad_request without a valid room_id, the policy's refusal.
func (s *Server) handleMedia(ctx context.Context, sess gateway.Session, env protocol.Envelope) error {
	var d struct {
		RoomID string `json:"room_id"`
	}
	// Only the room id is read here; the SFU validates the rest strictly.
	if len(env.Data) == 0 || json.Unmarshal(env.Data, &d) != nil {
		return protocol.Errorf(protocol.CodeBadRequest, "data with room_id is required")
	}
	if err := protocol.CheckRoomID("room_id", d.RoomID); err != nil {
		return err
	}
	sub := access.User(sess.Claims())
	sub.UserID = sess.UserID()
	if err := s.Access.Decide(ctx, sub, d.RoomID, access.Call); err != nil {
		return err
	}
	return s.SFU.Handle(ctx, sess.ID(), sess.UserID(), env.Type, env.ID, env.Data)
}

type hubSender struct{ s *Server }

func (h hubSender) SendToConnection(connID string, frame []byte) bool {
	return h.s.Hub.SendToConn(connID, frame)
}

// callEvents fans call lifecycle events out to the room's members.
type callEvents struct{ s *Server }

func (e callEvents) toMembers(roomID, typ string, data any) {
	members, err := e.s.Store.Members(context.Background(), roomID)
	if err != nil {
		e.s.log.Warn("call event: members", "room", roomID, "err", err)
		return
	}
	e.s.Broker.ToUsers(members, protocol.Encode(typ, "", data), "")
}

func (e callEvents) CallStarted(roomID, startedBy string) {
	e.toMembers(roomID, protocol.TypeRoomCallStarted, map[string]string{"room_id": roomID, "started_by": startedBy})
}

func (e callEvents) CallUpdated(roomID string, n int) {
	e.toMembers(roomID, protocol.TypeRoomCallUpdated, map[string]any{"room_id": roomID, "participant_count": n})
}

func (e callEvents) CallEnded(roomID string) {
	e.toMembers(roomID, protocol.TypeRoomCallEnded, map[string]string{"room_id": roomID})
}

type mediaLifecycle struct{ sfu *media.SFU }

func (mediaLifecycle) Connected(gateway.Session, bool) {}
func (m mediaLifecycle) Disconnected(s gateway.Session, _ bool) {
	m.sfu.Disconnect(s.ID())
}
