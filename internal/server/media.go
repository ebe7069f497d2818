package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/protocol"
)

// wireMedia creates the SFU, routes media:* messages to it (after the
// membership check), tells it about closed connections, registers its
// metrics, and serves the call endpoints.
//
// --dev implies --media-loopback. When the machine has no IPv4 address to
// announce (media.ErrNoAnnouncedIP) the server starts without calls: one
// warning names the flags, rooms and chat serve as usual, media:* requests
// answer `unsupported` ("calls are disabled on this server: ...") and the
// REST call endpoints answer 503 with the same error body.
func (s *Server) wireMedia(base *api.Base) error {
	cfg := s.cfg
	mc := media.Config{
		Workers: cfg.MediaWorkers, ListenIP: cfg.MediaListenIP, AnnouncedIP: cfg.MediaAnnouncedIP,
		RTCMinPort: uint16(cfg.MediaRTCMinPort), RTCMaxPort: uint16(cfg.MediaRTCMaxPort),
		UDPMuxPort: cfg.MediaUDPPort, TCPPort: cfg.MediaTCPPort, IncludeLoopback: cfg.MediaLoopback || cfg.Dev,
		TURNUsername: cfg.TURNUsername, TURNPassword: cfg.TURNPassword,
		TURNSharedSecret: cfg.TURNSharedSecret, TURNCredentialTTL: cfg.TURNCredentialTTL, ForceRelay: cfg.TURNForceRelay,
		EmbeddedTURN: media.EmbeddedTURN{Enabled: cfg.TURNEmbedded, ListenIP: cfg.TURNEmbeddedListen,
			Port: cfg.TURNEmbeddedPort, Realm: cfg.TURNEmbeddedRealm, RelayIP: cfg.MediaAnnouncedIP},
		Panics: s.Metrics,
	}
	for _, u := range strings.Split(cfg.TURNURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			mc.TURNURLs = append(mc.TURNURLs, u)
		}
	}
	log := s.log.With("component", "media")
	sfu, err := newSFU(mc, hubSender{s}, callEvents{s}, log)
	if errors.Is(err, media.ErrNoAnnouncedIP) {
		reason := "no IPv4 address to announce in ICE candidates"
		log.Warn("calls disabled: " + reason + "; set --media-announced-ip (PARLEY_MEDIA_ANNOUNCED_IP) to the address clients reach," +
			" or --media-loopback (PARLEY_MEDIA_LOOPBACK) for local use; rooms and chat are unaffected")
		sfu, err = media.Disabled(reason+" (set --media-announced-ip or --media-loopback)", log), nil
	}
	if err != nil {
		return err
	}
	s.SFU = sfu
	s.closers = append(s.closers, func(context.Context) error { return sfu.Close() })
	if err := s.Metrics.Registry.Register(sfu.Collector()); err != nil {
		return fmt.Errorf("media metrics: %w", err)
	}
	s.Gateway.Route("media", gateway.HandlerFunc(s.handleMedia))
	s.Gateway.OnLifecycle(mediaLifecycle{sfu})
	if reason := sfu.CallsDisabled(); reason != "" {
		callsDisabled(s.mux, reason)
		return nil
	}
	(&api.Calls{Base: base, SFU: sfu, Hub: s.Hub, Access: s.Access}).Register(s.mux)
	return nil
}

// newSFU is media.New; tests replace it to simulate a host without a
// routable IPv4 address.
var newSFU = media.New

// callsDisabled serves the call endpoints (the routes api.Calls registers)
// with 503 {"error":"unsupported","message":"calls are disabled on this
// server: <reason>"} when the SFU could not start.
func callsDisabled(mux *http.ServeMux, reason string) {
	h := func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{
			"error": protocol.CodeUnsupported, "message": "calls are disabled on this server: " + reason,
		})
	}
	for _, p := range []string{"POST /api/rooms/{id}/call/start", "POST /api/rooms/{id}/call/join",
		"POST /api/rooms/{id}/call/leave", "POST /api/rooms/{id}/call/end", "GET /api/rooms/{id}/call/participants"} {
		mux.HandleFunc(p, h)
	}
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
