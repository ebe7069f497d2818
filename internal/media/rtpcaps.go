package media

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// The shapes below are mediasoup's (camelCase), so that mediasoup-client takes
// them unchanged. Only the fields Parley reads or writes are typed; unknown
// fields sent by clients inside rtp_parameters are ignored.

// RtcpFeedback is mediasoup's RtcpFeedback.
type RtcpFeedback struct {
	Type      string `json:"type"`
	Parameter string `json:"parameter,omitempty"`
}

// RtpCodecCapability is one codec of the router's RtpCapabilities.
type RtpCodecCapability struct {
	Kind                 string         `json:"kind"`
	MimeType             string         `json:"mimeType"`
	PreferredPayloadType uint8          `json:"preferredPayloadType"`
	ClockRate            uint32         `json:"clockRate"`
	Channels             int            `json:"channels,omitempty"`
	Parameters           map[string]any `json:"parameters"`
	RtcpFeedback         []RtcpFeedback `json:"rtcpFeedback"`
}

// RtpHeaderExtensionCapability is one header extension of RtpCapabilities.
type RtpHeaderExtensionCapability struct {
	Kind             string `json:"kind"`
	URI              string `json:"uri"`
	PreferredID      int    `json:"preferredId"`
	PreferredEncrypt bool   `json:"preferredEncrypt"`
	Direction        string `json:"direction,omitempty"`
}

// RtpCapabilities is mediasoup's RtpCapabilities (router's, or a device's).
type RtpCapabilities struct {
	Codecs           []RtpCodecCapability           `json:"codecs"`
	HeaderExtensions []RtpHeaderExtensionCapability `json:"headerExtensions"`
}

// RtpCodecParameters is one codec of RtpParameters.
type RtpCodecParameters struct {
	MimeType     string         `json:"mimeType"`
	PayloadType  uint8          `json:"payloadType"`
	ClockRate    uint32         `json:"clockRate"`
	Channels     int            `json:"channels,omitempty"`
	Parameters   map[string]any `json:"parameters"`
	RtcpFeedback []RtcpFeedback `json:"rtcpFeedback"`
}

// RtpHeaderExtensionParameters is one header extension of RtpParameters.
type RtpHeaderExtensionParameters struct {
	URI        string         `json:"uri"`
	ID         int            `json:"id"`
	Encrypt    bool           `json:"encrypt"`
	Parameters map[string]any `json:"parameters"`
}

// RtxSSRC is the rtx member of an encoding.
type RtxSSRC struct {
	SSRC uint32 `json:"ssrc"`
}

// RtpEncodingParameters is one encoding of RtpParameters.
type RtpEncodingParameters struct {
	SSRC            uint32   `json:"ssrc,omitempty"`
	RID             string   `json:"rid,omitempty"`
	RTX             *RtxSSRC `json:"rtx,omitempty"`
	ScalabilityMode string   `json:"scalabilityMode,omitempty"`
}

// RtcpParameters is mediasoup's RtcpParameters.
type RtcpParameters struct {
	CNAME       string `json:"cname,omitempty"`
	ReducedSize bool   `json:"reducedSize"`
	Mux         *bool  `json:"mux,omitempty"`
}

// RtpParameters is mediasoup's RtpParameters.
type RtpParameters struct {
	MID              string                         `json:"mid,omitempty"`
	Codecs           []RtpCodecParameters           `json:"codecs"`
	HeaderExtensions []RtpHeaderExtensionParameters `json:"headerExtensions"`
	Encodings        []RtpEncodingParameters        `json:"encodings"`
	Rtcp             RtcpParameters                 `json:"rtcp"`
}

// Header extension URIs the router understands.
const (
	extMID          = "urn:ietf:params:rtp-hdrext:sdes:mid"
	extRID          = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
	extRRID         = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
	extAbsSendTime  = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
	extTransportCC  = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
	extAudioLevel   = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
	extVideoOrient  = "urn:3gpp:video-orientation"
	extTimeOffset   = "urn:ietf:params:rtp-hdrext:toffset"
	mimeRTX         = "video/rtx"
	kindAudio       = "audio"
	kindVideo       = "video"
	maxRTPParamSize = 16 << 10
	maxRTPCapsSize  = 64 << 10
)

func videoFeedback() []RtcpFeedback {
	return []RtcpFeedback{
		{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"},
		{Type: "goog-remb"}, {Type: "transport-cc"},
	}
}

// routerCodecs is the router's codec list; payload types are the router's
// preferred ones and are what every consumer receives.
func routerCodecs() []RtpCodecCapability {
	return []RtpCodecCapability{
		{Kind: kindAudio, MimeType: "audio/opus", PreferredPayloadType: 100, ClockRate: 48000, Channels: 2,
			Parameters: map[string]any{}, RtcpFeedback: []RtcpFeedback{{Type: "nack"}, {Type: "transport-cc"}}},
		{Kind: kindVideo, MimeType: "video/VP8", PreferredPayloadType: 101, ClockRate: 90000,
			Parameters: map[string]any{}, RtcpFeedback: videoFeedback()},
		{Kind: kindVideo, MimeType: mimeRTX, PreferredPayloadType: 102, ClockRate: 90000,
			Parameters: map[string]any{"apt": 101}, RtcpFeedback: []RtcpFeedback{}},
		{Kind: kindVideo, MimeType: "video/H264", PreferredPayloadType: 103, ClockRate: 90000,
			Parameters: map[string]any{
				"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1,
			}, RtcpFeedback: videoFeedback()},
		{Kind: kindVideo, MimeType: mimeRTX, PreferredPayloadType: 104, ClockRate: 90000,
			Parameters: map[string]any{"apt": 103}, RtcpFeedback: []RtcpFeedback{}},
		// VP9 profile 0, for SVC (scalabilityMode L3T3_KEY and friends);
		// after VP8 so that VP8 stays what clients pick by default.
		{Kind: kindVideo, MimeType: "video/VP9", PreferredPayloadType: 105, ClockRate: 90000,
			Parameters: map[string]any{"profile-id": 0}, RtcpFeedback: videoFeedback()},
		{Kind: kindVideo, MimeType: mimeRTX, PreferredPayloadType: 106, ClockRate: 90000,
			Parameters: map[string]any{"apt": 105}, RtcpFeedback: []RtcpFeedback{}},
	}
}

// routerHeaderExtensions lists the extensions the router reads on produce
// (direction recvonly or sendrecv) and writes on consumers (sendrecv,
// sendonly), with mediasoup's direction semantics (seen from the router).
func routerHeaderExtensions() []RtpHeaderExtensionCapability {
	return []RtpHeaderExtensionCapability{
		{Kind: kindAudio, URI: extMID, PreferredID: 1, Direction: "recvonly"},
		{Kind: kindVideo, URI: extMID, PreferredID: 1, Direction: "recvonly"},
		// Simulcast (rid-based encodings): read on produce to learn each
		// layer's SSRC (RID) and its RTX SSRC (RRID); never sent to consumers.
		{Kind: kindVideo, URI: extRID, PreferredID: 2, Direction: "recvonly"},
		{Kind: kindVideo, URI: extRRID, PreferredID: 3, Direction: "recvonly"},
		{Kind: kindAudio, URI: extAbsSendTime, PreferredID: 4, Direction: "sendrecv"},
		{Kind: kindVideo, URI: extAbsSendTime, PreferredID: 4, Direction: "sendrecv"},
		{Kind: kindAudio, URI: extTransportCC, PreferredID: 5, Direction: "recvonly"},
		{Kind: kindVideo, URI: extTransportCC, PreferredID: 5, Direction: "sendrecv"},
		{Kind: kindAudio, URI: extAudioLevel, PreferredID: 10, Direction: "sendrecv"},
		{Kind: kindVideo, URI: extVideoOrient, PreferredID: 11, Direction: "sendrecv"},
		{Kind: kindVideo, URI: extTimeOffset, PreferredID: 12, Direction: "sendrecv"},
	}
}

// RouterCapabilities returns the router's RtpCapabilities.
func RouterCapabilities() RtpCapabilities {
	return RtpCapabilities{Codecs: routerCodecs(), HeaderExtensions: routerHeaderExtensions()}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func paramInt(p map[string]any, key string) (int, bool) {
	v, ok := p[key]
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case float64:
		return int(x), true
	case int:
		return x, true
	case json.Number:
		n, err := x.Int64()
		return int(n), err == nil
	case string:
		n, err := strconv.Atoi(x)
		return n, err == nil
	}
	return 0, false
}

func paramString(p map[string]any, key string) string {
	switch x := p[key].(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

func channelsOf(n int) int {
	if n == 0 {
		return 1
	}
	return n
}

// codecMatches reports whether a codec described by (mime, clock, channels,
// params) is the same codec as the router codec rc (mediasoup's matchCodecs,
// non-strict: H264 needs the same packetization-mode and profile).
func codecMatches(rc RtpCodecCapability, mime string, clock uint32, channels int, params map[string]any) bool {
	if !strings.EqualFold(rc.MimeType, mime) || rc.ClockRate != clock {
		return false
	}
	if rc.Kind == kindAudio && channelsOf(rc.Channels) != channelsOf(channels) {
		return false
	}
	if strings.EqualFold(mime, "video/H264") {
		pm, _ := paramInt(params, "packetization-mode")
		rpm, _ := paramInt(rc.Parameters, "packetization-mode")
		if pm != rpm {
			return false
		}
		// Profile: compare profile_idc and the constraint byte's baseline bits
		// loosely: the first two hex digits (profile_idc) must agree, except
		// that constrained baseline (42e0xx) and baseline (42xxxx) interoperate.
		plid := strings.ToLower(paramString(params, "profile-level-id"))
		if plid == "" {
			plid = "42001f"
		}
		rplid := strings.ToLower(paramString(rc.Parameters, "profile-level-id"))
		if len(plid) != 6 || len(rplid) != 6 || plid[:2] != rplid[:2] {
			return false
		}
	}
	if strings.EqualFold(mime, "video/VP9") {
		// profile-id (RFC 9628 6.1), 0 when absent.
		pid, _ := paramInt(params, "profile-id")
		rpid, _ := paramInt(rc.Parameters, "profile-id")
		if pid != rpid {
			return false
		}
	}
	return true
}

// findRouterCodec returns the router codec matching c, ignoring RTX.
func findRouterCodec(kind, mime string, clock uint32, channels int, params map[string]any) (RtpCodecCapability, bool) {
	for _, rc := range routerCodecs() {
		if rc.Kind != kind || strings.EqualFold(rc.MimeType, mimeRTX) {
			continue
		}
		if codecMatches(rc, mime, clock, channels, params) {
			return rc, true
		}
	}
	return RtpCodecCapability{}, false
}

func routerRTXFor(pt uint8) (RtpCodecCapability, bool) {
	for _, rc := range routerCodecs() {
		if strings.EqualFold(rc.MimeType, mimeRTX) {
			if apt, ok := paramInt(rc.Parameters, "apt"); ok && apt == int(pt) {
				return rc, true
			}
		}
	}
	return RtpCodecCapability{}, false
}

func hasFeedback(list []RtcpFeedback, fb RtcpFeedback) bool {
	for _, f := range list {
		if f.Type == fb.Type && f.Parameter == fb.Parameter {
			return true
		}
	}
	return false
}

func isRTXMime(m string) bool { return strings.EqualFold(m, mimeRTX) }

// validateCapabilities checks a client's rtp_capabilities for shape.
func validateCapabilities(c *RtpCapabilities) error {
	if len(c.Codecs) > 64 || len(c.HeaderExtensions) > 64 {
		return fmt.Errorf("too many codecs or header extensions")
	}
	for _, cd := range c.Codecs {
		if cd.MimeType == "" || len(cd.MimeType) > 64 || cd.ClockRate == 0 {
			return fmt.Errorf("codec needs mimeType and clockRate")
		}
		if len(cd.RtcpFeedback) > 32 {
			return fmt.Errorf("too many rtcpFeedback entries")
		}
	}
	return nil
}
