// Command mediafixtures prints, as one JSON object, the signalling payloads a
// Parley SFU produces for a call (router capabilities, a transport_created
// payload and consumer_created payloads for audio and video), so that
// web/media's Node test can feed them to mediasoup-client's own parsers.
//
//	go run ./internal/media/cmd/mediafixtures > fixtures.json
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/parleyhq/parley/internal/media"
)

type recorder struct {
	mu     sync.Mutex
	frames map[string]map[string]json.RawMessage // conn → type → data (last)
}

func (r *recorder) SendToConnection(conn string, b []byte) bool {
	var f struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(b, &f)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frames[conn] == nil {
		r.frames[conn] = map[string]json.RawMessage{}
	}
	r.frames[conn][f.Type] = f.Data
	return true
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mediafixtures:", err)
		os.Exit(1)
	}
}

func run() error {
	rec := &recorder{frames: map[string]map[string]json.RawMessage{}}
	s, err := media.New(media.Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Workers: 1}, rec, nil, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	caps, _, err := s.StartCall("fixtures", "u1")
	if err != nil {
		return err
	}
	h := func(conn, user, typ string, data any) error {
		raw, _ := json.Marshal(data)
		return s.Handle(context.Background(), conn, user, typ, "1", raw)
	}
	if err := h("a", "u1", media.TypeJoin, map[string]string{"room_id": "fixtures"}); err != nil {
		return err
	}
	if err := h("b", "u2", media.TypeJoin, map[string]string{"room_id": "fixtures"}); err != nil {
		return err
	}
	var tc struct {
		SendTransport media.TransportInfo `json:"send_transport"`
	}
	_ = json.Unmarshal(rec.frames["a"][media.TypeTransportCreated], &tc)
	// What Chromium's mediasoup-client sends (DESIGN.md).
	audio := json.RawMessage(`{"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,"parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"transport-cc","parameter":""}]}],"headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}},{"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","id":2,"encrypt":false,"parameters":{}},{"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01","id":3,"encrypt":false,"parameters":{}},{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1,"encrypt":false,"parameters":{}}],"encodings":[{"ssrc":1111,"dtx":false}],"rtcp":{"cname":"abc","reducedSize":true}}`)
	video := json.RawMessage(`{"mid":"1","codecs":[{"mimeType":"video/VP8","payloadType":96,"clockRate":90000,"parameters":{},"rtcpFeedback":[{"type":"goog-remb","parameter":""},{"type":"transport-cc","parameter":""},{"type":"ccm","parameter":"fir"},{"type":"nack","parameter":""},{"type":"nack","parameter":"pli"}]},{"mimeType":"video/rtx","payloadType":97,"clockRate":90000,"parameters":{"apt":96},"rtcpFeedback":[]}],"headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}},{"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","id":2,"encrypt":false,"parameters":{}},{"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01","id":3,"encrypt":false,"parameters":{}}],"encodings":[{"ssrc":2222,"rtx":{"ssrc":3333},"active":true}],"rtcp":{"cname":"abc","reducedSize":true}}`)
	out := map[string]json.RawMessage{"rtp_capabilities": caps, "transport_created": rec.frames["a"][media.TypeTransportCreated]}
	for _, p := range []struct {
		kind   string
		params json.RawMessage
	}{{"audio", audio}, {"video", video}} {
		if err := h("a", "u1", media.TypeProduce, map[string]any{
			"room_id": "fixtures", "transport_id": tc.SendTransport.ID, "kind": p.kind, "rtp_parameters": p.params,
		}); err != nil {
			return err
		}
		var pr struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(rec.frames["a"][media.TypeProduceResult], &pr)
		if err := h("b", "u2", media.TypeConsume, map[string]any{
			"room_id": "fixtures", "producer_id": pr.ID, "rtp_capabilities": caps,
		}); err != nil {
			return err
		}
		out["consumer_created_"+p.kind] = rec.frames["b"][media.TypeConsumerCreated]
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
