// Package config holds Parley's one Config struct: defaults, the optional
// YAML file, PARLEY_* environment variables and command-line flags, in that
// order of increasing precedence, and validation that names the bad field.
//
// Every setting is declared once, by struct tags:
//
//	flag:"http-addr" env:"PARLEY_HTTP_ADDR" default:"127.0.0.1:7880" usage:"..."
//
// and the same name (the flag name) is the key in the YAML file.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is every setting of the server.
type Config struct {
	ConfigFile string `flag:"config" env:"PARLEY_CONFIG" default:"" usage:"optional YAML config file (keys are the flag names)"`
	Dev        bool   `flag:"dev" env:"PARLEY_DEV" default:"false" usage:"development mode: generate a secret when none is set, print a sample token, rooms are open"`

	HTTPAddr        string        `flag:"http-addr" env:"PARLEY_HTTP_ADDR" default:"127.0.0.1:7880" usage:"HTTP and WebSocket listen address"`
	DataDir         string        `flag:"data-dir" env:"PARLEY_DATA_DIR" default:"./data" usage:"directory for the embedded SQLite database"`
	LogFormat       string        `flag:"log-format" env:"PARLEY_LOG_FORMAT" default:"text" usage:"log format: text or json"`
	LogLevel        string        `flag:"log-level" env:"PARLEY_LOG_LEVEL" default:"info" usage:"log level: debug, info, warn, error"`
	ShutdownTimeout time.Duration `flag:"shutdown-timeout" env:"PARLEY_SHUTDOWN_TIMEOUT" default:"10s" usage:"how long graceful shutdown may take"`
	WebDir          string        `flag:"web-dir" env:"PARLEY_WEB_DIR" default:"" usage:"serve static files from this directory at / (e.g. web/media/dist); empty = off"`
	Demo            bool          `flag:"demo" env:"PARLEY_DEMO" default:"true" usage:"serve the demo app (web/demo, built into the binary) at /; web-dir, when set, takes / instead"`
	DebugAddr       string        `flag:"debug-addr" env:"PARLEY_DEBUG_ADDR" default:"" usage:"listen address for pprof (e.g. 127.0.0.1:6060); empty = off"`

	AuthSecret              string        `flag:"auth-secret" secret:"true" env:"PARLEY_AUTH_SECRET" default:"" usage:"HS256 shared secret for access tokens (at least 16 bytes)"`
	AuthRSAPublicKey        string        `flag:"auth-rsa-public-key" env:"PARLEY_AUTH_RSA_PUBLIC_KEY" default:"" usage:"PEM file of an RSA public key: accept RS256 tokens"`
	AuthEdPublicKey         string        `flag:"auth-ed25519-public-key" env:"PARLEY_AUTH_ED25519_PUBLIC_KEY" default:"" usage:"PEM file of an Ed25519 public key: accept EdDSA tokens"`
	AuthLeeway              time.Duration `flag:"auth-leeway" env:"PARLEY_AUTH_LEEWAY" default:"0s" usage:"clock skew allowed on token exp/nbf"`
	AccessTokenTTL          time.Duration `flag:"access-token-ttl" env:"PARLEY_ACCESS_TOKEN_TTL" default:"15m" usage:"lifetime of access tokens issued by login/refresh"`
	RefreshTokenTTL         time.Duration `flag:"refresh-token-ttl" env:"PARLEY_REFRESH_TOKEN_TTL" default:"720h" usage:"lifetime of refresh tokens"`
	APIKey                  string        `flag:"api-key" secret:"true" env:"PARLEY_API_KEY" default:"" usage:"bearer key for the server REST API (POST /api/tokens, storage); empty = disabled"`
	LoginRate               float64       `flag:"login-rate" env:"PARLEY_LOGIN_RATE" default:"0.2" usage:"login attempts per second allowed per client IP and username pair (a success refills it)"`
	RESTRate                float64       `flag:"rest-rate" env:"PARLEY_REST_RATE" default:"10" usage:"REST writes (POST/PATCH/DELETE) per second per user (per IP without a token); the API key is exempt"`
	RESTBurst               int           `flag:"rest-burst" env:"PARLEY_REST_BURST" default:"50" usage:"REST write burst per user"`
	LoginBurst              int           `flag:"login-burst" env:"PARLEY_LOGIN_BURST" default:"10" usage:"login attempts burst per client IP and username pair"`
	LoginIPRate             float64       `flag:"login-ip-rate" env:"PARLEY_LOGIN_IP_RATE" default:"1" usage:"login attempts per second per client IP, whatever the username"`
	LoginIPBurst            int           `flag:"login-ip-burst" env:"PARLEY_LOGIN_IP_BURST" default:"30" usage:"login attempts burst per client IP"`
	LoginUserRate           float64       `flag:"login-user-rate" env:"PARLEY_LOGIN_USER_RATE" default:"1" usage:"failed logins per second per username from all IPs together; applies only to IP and username pairs with a failure in the last 15 minutes, so others cannot lock a user out"`
	LoginUserBurst          int           `flag:"login-user-burst" env:"PARLEY_LOGIN_USER_BURST" default:"100" usage:"failed logins burst per username from all IPs together"`
	RegisterRate            float64       `flag:"register-rate" env:"PARLEY_REGISTER_RATE" default:"0.05" usage:"registrations per second per client IP (IPv6: per /64)"`
	RegisterBurst           int           `flag:"register-burst" env:"PARLEY_REGISTER_BURST" default:"5" usage:"registration burst per client IP"`
	PasswordHashConcurrency int           `flag:"password-hash-concurrency" env:"PARLEY_PASSWORD_HASH_CONCURRENCY" default:"4" usage:"most argon2id password hashes or checks at once (each holds 19 MiB); others wait"`
	PasswordHashWait        time.Duration `flag:"password-hash-wait" env:"PARLEY_PASSWORD_HASH_WAIT" default:"5s" usage:"longest a register or login waits for a hashing slot before 429 rate_limited (shorter than http-write-timeout)"`

	HTTPReadHeaderTimeout time.Duration `flag:"http-read-header-timeout" env:"PARLEY_HTTP_READ_HEADER_TIMEOUT" default:"10s" usage:"time allowed to read a request's headers"`
	HTTPReadTimeout       time.Duration `flag:"http-read-timeout" env:"PARLEY_HTTP_READ_TIMEOUT" default:"30s" usage:"time allowed to read a whole REST request, body included (not applied to WebSocket connections after the upgrade)"`
	HTTPWriteTimeout      time.Duration `flag:"http-write-timeout" env:"PARLEY_HTTP_WRITE_TIMEOUT" default:"30s" usage:"time allowed to write a REST response (not applied to WebSocket connections after the upgrade)"`
	HTTPIdleTimeout       time.Duration `flag:"http-idle-timeout" env:"PARLEY_HTTP_IDLE_TIMEOUT" default:"60s" usage:"close a keep-alive HTTP connection idle for this long"`
	HTTPMaxConns          int           `flag:"http-max-connections" env:"PARLEY_HTTP_MAX_CONNECTIONS" default:"1024" usage:"most HTTP connections not yet upgraded to WebSocket; beyond it idle (then oldest request-less) ones are closed (0 = unlimited)"`

	HeartbeatInterval      time.Duration `flag:"heartbeat-interval" env:"PARLEY_HEARTBEAT_INTERVAL" default:"30s" usage:"server WebSocket ping interval"`
	HeartbeatTimeout       time.Duration `flag:"heartbeat-timeout" env:"PARLEY_HEARTBEAT_TIMEOUT" default:"120s" usage:"close a connection silent for this long"`
	WriteTimeout           time.Duration `flag:"write-timeout" env:"PARLEY_WRITE_TIMEOUT" default:"10s" usage:"deadline for one socket write"`
	MaxMessageBytes        int           `flag:"max-message-bytes" env:"PARLEY_MAX_MESSAGE_BYTES" default:"65536" usage:"largest client message; bigger closes with 4009"`
	QueueMaxBytes          int           `flag:"queue-max-bytes" env:"PARLEY_QUEUE_MAX_BYTES" default:"1048576" usage:"per-connection outbound queue; overflow closes with 4008"`
	MsgRate                float64       `flag:"msg-rate" env:"PARLEY_MSG_RATE" default:"100" usage:"client messages per second per connection (token bucket rate)"`
	MsgBurst               int           `flag:"msg-burst" env:"PARLEY_MSG_BURST" default:"200" usage:"client message burst per connection"`
	MsgBytesRate           int           `flag:"msg-bytes-rate" env:"PARLEY_MSG_BYTES_RATE" default:"1048576" usage:"client message bytes per second per connection, counted after permessage-deflate inflation (token bucket; burst 4 seconds' worth, at least max-message-bytes); 0 = no byte limit"`
	RateLimitStrikes       int           `flag:"rate-limit-strikes" env:"PARLEY_RATE_LIMIT_STRIKES" default:"50" usage:"rate_limited replies within the violation window before closing with 4029"`
	ViolationLimit         int           `flag:"violation-limit" env:"PARLEY_VIOLATION_LIMIT" default:"20" usage:"protocol violations within the window before closing with 4400"`
	ViolationWindow        time.Duration `flag:"violation-window" env:"PARLEY_VIOLATION_WINDOW" default:"10s" usage:"window for counting violations and rate-limit strikes"`
	MaxConnections         int           `flag:"max-connections" env:"PARLEY_MAX_CONNECTIONS" default:"0" usage:"refuse new WebSocket connections beyond this many with 503 (0 = derived: RLIMIT_NOFILE minus 64 minus http-max-connections, the latter counted as at most a quarter of the rest; logged at start-up)"`
	MaxConnsPerUser        int           `flag:"max-connections-per-user" env:"PARLEY_MAX_CONNECTIONS_PER_USER" default:"50" usage:"refuse a user's WebSocket connections on this node beyond this many with 429 rate_limited (0 = unlimited)"`
	MaxConnsPerIP          int           `flag:"max-connections-per-ip" env:"PARLEY_MAX_CONNECTIONS_PER_IP" default:"0" usage:"refuse WebSocket connections from one IPv4 address or IPv6 /64 (the TCP peer, so off by default: behind a reverse proxy every client shares its address; set it when clients connect directly) beyond this many with 429 rate_limited (0 = unlimited)"`
	WSCompression          bool          `flag:"ws-compression" env:"PARLEY_WS_COMPRESSION" default:"true" usage:"accept permessage-deflate (RFC 7692) when a client offers it, always with server_no_context_takeover and client_no_context_takeover; frames delivered to many connections (room batches, broadcasts) are compressed once and the same bytes written to every connection that negotiated it, a frame for one connection is never compressed; compressed client messages are inflated up to max-message-bytes"`
	WSCompressionThreshold int           `flag:"ws-compression-threshold" env:"PARLEY_WS_COMPRESSION_THRESHOLD" default:"1024" usage:"shared frames shorter than this many bytes are sent uncompressed even on a connection that negotiated permessage-deflate (0 = compress every shared frame that shrinks)"`

	StorageMaxBytes    int `flag:"storage-max-bytes" env:"PARLEY_STORAGE_MAX_BYTES" default:"1048576" usage:"largest room storage document"`
	StorageMaxOps      int `flag:"storage-max-ops" env:"PARLEY_STORAGE_MAX_OPS" default:"100" usage:"most JSON Patch ops per batch"`
	StorageMaxDepth    int `flag:"storage-max-depth" env:"PARLEY_STORAGE_MAX_DEPTH" default:"32" usage:"deepest JSON nesting in a storage document"`
	StorageKeepUpdates int `flag:"storage-keep-updates" env:"PARLEY_STORAGE_KEEP_UPDATES" default:"1000" usage:"recent storage updates kept per room for catch-up (since_version)"`
	SnapshotEvery      int `flag:"snapshot-every" env:"PARLEY_SNAPSHOT_EVERY" default:"500" usage:"write a full storage snapshot every N updates of a room"`
	MaxRoomsPerConn    int `flag:"max-rooms-per-connection" env:"PARLEY_MAX_ROOMS_PER_CONNECTION" default:"100" usage:"most rooms one connection may be in at once"`
	PresenceMaxBytes   int `flag:"presence-max-bytes" env:"PARLEY_PRESENCE_MAX_BYTES" default:"4096" usage:"largest per-client room presence object"`
	// Large rooms (issue 15, PROTOCOL.md v1.1 §3).
	LargeRoomMembers  int           `flag:"large-room-members" env:"PARLEY_LARGE_ROOM_MEMBERS" default:"100" usage:"a room with more members than this is large: room:state lists this many members (the rest by room:members pages) and joins and leaves go out as room:members_changed once per large-room-interval"`
	LargeRoomInterval time.Duration `flag:"large-room-interval" env:"PARLEY_LARGE_ROOM_INTERVAL" default:"100ms" usage:"how often a large room sends its collected joins and leaves (and, with presence-coalesce, presence)"`
	PresenceCoalesce  bool          `flag:"presence-coalesce" env:"PARLEY_PRESENCE_COALESCE" default:"true" usage:"in large rooms, send the others each client's latest presence once per large-room-interval as room:presence_batch instead of a room:presence_updated per change (the sender's own reply is unchanged)"`
	CommitMaxBatch    int           `flag:"commit-max-batch" env:"PARLEY_COMMIT_MAX_BATCH" default:"1024" usage:"most storage updates per group commit"`
	// Bounds the catch-up replay kept in memory per room in bytes (issue 9 §5).
	StorageKeepUpdatesBytes int `flag:"storage-keep-updates-bytes" env:"PARLEY_STORAGE_KEEP_UPDATES_BYTES" default:"1048576" usage:"most bytes of recent storage updates (ops and client ids) kept in memory per room for catch-up; a since_version older than that gets the full document"`

	TypingTimeout        time.Duration `flag:"typing-timeout" env:"PARLEY_TYPING_TIMEOUT" default:"6s" usage:"typing indicator expiry without renewal"`
	PresenceOfflineGrace time.Duration `flag:"presence-offline-grace" env:"PARLEY_PRESENCE_OFFLINE_GRACE" default:"5s" usage:"delay after a user's last connection closes before they show offline"`
	PresenceAudience     string        `flag:"presence-audience" env:"PARLEY_PRESENCE_AUDIENCE" default:"all" usage:"who receives user status changes: all (every connected user) or shared (users who are members of a common room created over REST; token grants and live room:join do not count)"`
	MessageMaxChars      int           `flag:"message-max-chars" env:"PARLEY_MESSAGE_MAX_CHARS" default:"4000" usage:"longest chat message, in characters"`
	RESTMaxBodyBytes     int64         `flag:"rest-max-body-bytes" env:"PARLEY_REST_MAX_BODY_BYTES" default:"1048576" usage:"largest REST request body"`
	// Browsers on other origins calling the REST API (issue 13).
	CORSOrigins string `flag:"cors-origins" env:"PARLEY_CORS_ORIGINS" default:"" usage:"origins allowed to call the REST API from a browser page (CORS), comma-separated, e.g. https://app.example.com; * allows any origin; empty allows none (same-origin pages only), except under --dev, where it is *"`

	// Webhooks to the application's backend (issue 14, PROTOCOL.md v1.1 §7).
	WebhookURL         string        `flag:"webhook-url" env:"PARLEY_WEBHOOK_URL" default:"" usage:"URLs (http or https, comma-separated) that receive a signed POST for every webhook event (room.*, call.*, message.created, user.*); empty = no webhooks; needs webhook-secret"`
	WebhookSecret      string        `flag:"webhook-secret" secret:"true" env:"PARLEY_WEBHOOK_SECRET" default:"" usage:"key of the Parley-Signature HMAC-SHA256 on every webhook (at least 16 bytes, 8 distinct); required with webhook-url"`
	WebhookQueueSize   int           `flag:"webhook-queue-size" env:"PARLEY_WEBHOOK_QUEUE_SIZE" default:"10000" usage:"most webhook deliveries waiting per URL (new and being retried), in memory; beyond it the oldest is dropped and counted (parley_webhook_dropped_total)"`
	WebhookTimeout     time.Duration `flag:"webhook-timeout" env:"PARLEY_WEBHOOK_TIMEOUT" default:"10s" usage:"longest one webhook POST may take; no 2xx answer within it is a failed attempt"`
	WebhookRetryFor    time.Duration `flag:"webhook-retry-for" env:"PARLEY_WEBHOOK_RETRY_FOR" default:"15m" usage:"how long a webhook delivery is retried with exponential backoff (at least 10m) before it is given up and counted (parley_webhook_failed_total)"`
	WebhookConcurrency int           `flag:"webhook-concurrency" env:"PARLEY_WEBHOOK_CONCURRENCY" default:"4" usage:"webhook POSTs in flight at once per URL (1-64)"`

	// Coalesces user status broadcasts per user (issue 9 hardening).
	PresenceUpdateInterval time.Duration `flag:"presence-update-interval" env:"PARLEY_PRESENCE_UPDATE_INTERVAL" default:"1s" usage:"at most one user status broadcast (presence:update to others) per user per interval, the last value winning; 0 sends every change at once"`

	StoreDriver string `flag:"store" env:"PARLEY_STORE" default:"sqlite" usage:"store: sqlite (embedded) or postgres"`
	PostgresURL string `flag:"postgres-url" secret:"true" env:"PARLEY_POSTGRES_URL" default:"" usage:"PostgreSQL URL when store=postgres"`
	Broker      string `flag:"broker" env:"PARLEY_BROKER" default:"local" usage:"fan-out broker: local (one process) or nats (cluster)"`
	NATSURL     string `flag:"nats-url" env:"PARLEY_NATS_URL" default:"nats://127.0.0.1:4222" usage:"NATS URL when broker=nats (the server must run JetStream, NATS 2.9 or later: the cluster registry and room leases are KV buckets)"`
	NodeID      string `flag:"node-id" env:"PARLEY_NODE_ID" default:"" usage:"this node's id in a cluster, 1-64 characters of A-Z a-z 0-9 _ - (default: random); a second node with the id of a live one refuses to start"`
	ClusterName string `flag:"cluster-name" env:"PARLEY_CLUSTER_NAME" default:"parley" usage:"cluster name, 1-32 characters of A-Z a-z 0-9 _ -: prefixes every NATS subject and KV bucket of the deployment, so several can share one NATS"`

	NodeHeartbeat time.Duration `flag:"node-heartbeat" env:"PARLEY_NODE_HEARTBEAT" default:"2s" usage:"how often a node writes its heartbeat to the cluster registry (broker=nats)"`
	NodeDeadAfter time.Duration `flag:"node-dead-after" env:"PARLEY_NODE_DEAD_AFTER" default:"10s" usage:"a node silent in the cluster registry this long is declared dead and its clients leave; more than twice node-heartbeat and less than 15s"`

	MediaWorkers            int           `flag:"media-workers" env:"PARLEY_MEDIA_WORKERS" default:"0" usage:"SFU workers (0 = number of CPUs)"`
	MediaListenIP           string        `flag:"media-listen-ip" env:"PARLEY_MEDIA_LISTEN_IP" default:"0.0.0.0" usage:"IP the SFU's UDP sockets bind to"`
	MediaAnnouncedIP        string        `flag:"media-announced-ip" env:"PARLEY_MEDIA_ANNOUNCED_IP" default:"" usage:"IP announced in ICE candidates (public IP behind NAT)"`
	MediaRTCMinPort         int           `flag:"media-rtc-min-port" env:"PARLEY_MEDIA_RTC_MIN_PORT" default:"40000" usage:"lowest UDP port for media"`
	MediaRTCMaxPort         int           `flag:"media-rtc-max-port" env:"PARLEY_MEDIA_RTC_MAX_PORT" default:"49999" usage:"highest UDP port for media"`
	MediaUDPPort            int           `flag:"media-udp-port" env:"PARLEY_MEDIA_UDP_PORT" default:"0" usage:"one muxed UDP port for all media (0 = use the port range)"`
	MediaTCPPort            int           `flag:"media-tcp-port" env:"PARLEY_MEDIA_TCP_PORT" default:"0" usage:"also offer ICE over TCP (passive candidates) on this port (0 = off)"`
	MediaLoopback           bool          `flag:"media-loopback" env:"PARLEY_MEDIA_LOOPBACK" default:"false" usage:"also offer 127.0.0.1 ICE candidates (local testing)"`
	MediaDataChannels       bool          `flag:"media-data-channels" env:"PARLEY_MEDIA_DATA_CHANNELS" default:"true" usage:"data channels in calls (SCTP on every transport: media:produce_data / media:consume_data, mediasoup-client's produceData/consumeData); false: transports carry no sctpParameters and those requests answer unsupported"`
	MediaDataMaxMessageSize int           `flag:"media-data-max-message-size" env:"PARLEY_MEDIA_DATA_MAX_MESSAGE_SIZE" default:"262144" usage:"largest data channel message in bytes (sctpParameters.maxMessageSize, 1024 to 1048576); a data producer sending a larger one is closed"`
	MediaDataSendBuffer     int           `flag:"media-data-send-buffer" env:"PARLEY_MEDIA_DATA_SEND_BUFFER" default:"1048576" usage:"bytes that may wait to be sent to one data consumer (at least media-data-max-message-size); a message that would exceed it is dropped for that consumer and counted (parley_media_data_dropped_total)"`
	TURNURL                 string        `flag:"turn-url" env:"PARLEY_TURN_URL" default:"" usage:"TURN server URL(s), comma separated, given to clients"`
	TURNUsername            string        `flag:"turn-username" env:"PARLEY_TURN_USERNAME" default:"" usage:"static TURN username"`
	TURNPassword            string        `flag:"turn-password" secret:"true" env:"PARLEY_TURN_PASSWORD" default:"" usage:"static TURN password"`
	TURNSharedSecret        string        `flag:"turn-shared-secret" secret:"true" env:"PARLEY_TURN_SHARED_SECRET" default:"" usage:"coturn REST shared secret for time-limited TURN credentials"`
	TURNCredentialTTL       time.Duration `flag:"turn-credential-ttl" env:"PARLEY_TURN_CREDENTIAL_TTL" default:"12h" usage:"lifetime of shared-secret TURN credentials"`
	TURNForceRelay          bool          `flag:"turn-force-relay" env:"PARLEY_TURN_FORCE_RELAY" default:"false" usage:"tell clients to use relay candidates only"`
	TURNEmbedded            bool          `flag:"turn-embedded" env:"PARLEY_TURN_EMBEDDED" default:"false" usage:"run an embedded TURN server (UDP)"`
	TURNEmbeddedPort        int           `flag:"turn-embedded-port" env:"PARLEY_TURN_EMBEDDED_PORT" default:"3478" usage:"embedded TURN UDP port"`
	TURNEmbeddedRealm       string        `flag:"turn-embedded-realm" env:"PARLEY_TURN_EMBEDDED_REALM" default:"parley" usage:"embedded TURN realm"`
	TURNEmbeddedListen      string        `flag:"turn-embedded-listen-ip" env:"PARLEY_TURN_EMBEDDED_LISTEN_IP" default:"0.0.0.0" usage:"embedded TURN listen IP"`

	// Call lifecycle (PROTOCOL.md section 6, v1.1).
	MediaTransportTimeout time.Duration `flag:"media-transport-timeout" env:"PARLEY_MEDIA_TRANSPORT_TIMEOUT" default:"30s" usage:"a call participant whose media transport stays ICE/DTLS failed or disconnected this long leaves the call (0 = never)"`
	MediaCallIdleTimeout  time.Duration `flag:"media-call-idle-timeout" env:"PARLEY_MEDIA_CALL_IDLE_TIMEOUT" default:"1m" usage:"a call without participants this long ends on its own, as with call/end (0 = never)"`
}

// FlagSet returns a flag set with one flag per setting, named as in the
// struct tags, for usage text and parsing.
func FlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	forEachField(func(f fieldInfo) {
		fs.Var(&rawFlag{kind: f.kind}, f.flag, f.usage+" (env "+f.env+", default "+quoteDefault(f.def)+")")
	})
	return fs
}

// FlagSetOf returns a flag set with only the named settings (flag names),
// for commands that read a few of them (parley token: auth-secret,
// config); Load accepts it like a full FlagSet, the other settings coming
// from the file, the environment and the defaults. An unknown name
// panics (a programming error).
func FlagSetOf(name string, flags ...string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	want := map[string]bool{}
	for _, f := range flags {
		want[f] = true
	}
	forEachField(func(f fieldInfo) {
		if want[f.flag] {
			fs.Var(&rawFlag{kind: f.kind}, f.flag, f.usage+" (env "+f.env+", default "+quoteDefault(f.def)+")")
			delete(want, f.flag)
		}
	})
	for f := range want {
		panic("config.FlagSetOf: no setting " + f)
	}
	return fs
}

func quoteDefault(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// MinSecretLen is the shortest auth-secret or api-key accepted.
const MinSecretLen = 16

// MinSecretDistinctBytes is the fewest distinct bytes an auth-secret or
// api-key must hold: it refuses "kkkkkkkkkkkkkkkk" and "abababab...", not
// real randomness (e.g. openssl rand -base64 32).
const MinSecretDistinctBytes = 8

// weakSecret says what is wrong with a configured auth-secret or api-key,
// or "" when nothing is: at least MinSecretLen bytes, no leading or trailing
// whitespace (a paste or a file's stray blank, never part of a key meant
// to be sent as a bearer token), at least MinSecretDistinctBytes distinct
// bytes (15 spaces and an x, or one repeated character, is no secret).
func weakSecret(s string) string {
	if len(s) < MinSecretLen {
		return fmt.Sprintf("must be at least %d bytes", MinSecretLen)
	}
	if strings.TrimSpace(s) != s {
		return "must not begin or end with whitespace"
	}
	var seen [256]bool
	n := 0
	for i := 0; i < len(s); i++ {
		if !seen[s[i]] {
			seen[s[i]] = true
			n++
		}
	}
	if n < MinSecretDistinctBytes {
		return fmt.Sprintf("must hold at least %d distinct bytes (got %d); use a random value, e.g. openssl rand -base64 32", MinSecretDistinctBytes, n)
	}
	return ""
}

// SecretFlag names a secret setting given on the command line.
type SecretFlag struct {
	Flag string // flag name without dashes, e.g. "api-key"
	Env  string // its environment variable, e.g. "PARLEY_API_KEY"
}

// SecretFlagsSet lists the secret settings (fields tagged secret:"true")
// that were given as flags on fs. A flag's value is visible to every local
// user (ps, /proc/PID/cmdline) and in /debug/pprof/cmdline, so serve warns
// about each one and points to the environment variable or its _FILE form
// (PARLEY_API_KEY_FILE=/run/secrets/api-key), which Load reads for every
// secret setting.
func SecretFlagsSet(fs *flag.FlagSet) []SecretFlag {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var out []SecretFlag
	forEachField(func(f fieldInfo) {
		if f.secret && set[f.flag] {
			out = append(out, SecretFlag{Flag: f.flag, Env: f.env})
		}
	})
	return out
}

// rawFlag records the string a flag was given; Load converts it.
type rawFlag struct {
	kind  reflect.Kind
	value string
	set   bool
}

func (r *rawFlag) String() string { return r.value }
func (r *rawFlag) Set(s string) error {
	r.value, r.set = s, true
	return nil
}
func (r *rawFlag) IsBoolFlag() bool { return r.kind == reflect.Bool }

// Load builds the config: defaults, then the YAML file (from --config or
// PARLEY_CONFIG), then the PARLEY_*_FILE files of secret settings, then
// PARLEY_* environment, then the flags that were set on
// fs (which must come from FlagSet and be parsed). getenv is os.Getenv in
// production. The result is validated.
func Load(fs *flag.FlagSet, getenv func(string) string) (*Config, error) {
	cfg := &Config{}
	var errs []error
	forEachField(func(f fieldInfo) {
		if err := setField(cfg, f, f.def); err != nil {
			errs = append(errs, fmt.Errorf("default of %s: %w", f.flag, err))
		}
	})
	flagValue := func(name string) (string, bool) {
		if fs == nil {
			return "", false
		}
		fl := fs.Lookup(name)
		if fl == nil {
			return "", false
		}
		r, ok := fl.Value.(*rawFlag)
		if !ok || !r.set {
			return "", false
		}
		return r.value, true
	}
	// The file path itself comes from flag or env.
	path := getenv("PARLEY_CONFIG")
	if v, ok := flagValue("config"); ok {
		path = v
	}
	if path != "" {
		if err := loadFile(cfg, path); err != nil {
			return nil, err
		}
	}
	forEachField(func(f fieldInfo) {
		if !f.secret {
			return
		}
		if file := getenv(f.env + "_FILE"); file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s (env %s_FILE): %w", f.flag, f.env, err))
				return
			}
			if err := setField(cfg, f, strings.TrimRight(string(b), "\r\n")); err != nil {
				errs = append(errs, fmt.Errorf("%s (env %s_FILE): %w", f.flag, f.env, err))
			}
		}
	})
	forEachField(func(f fieldInfo) {
		if v := getenv(f.env); v != "" {
			if err := setField(cfg, f, v); err != nil {
				errs = append(errs, fmt.Errorf("%s (env %s): %w", f.flag, f.env, err))
			}
		}
	})
	forEachField(func(f fieldInfo) {
		if v, ok := flagValue(f.flag); ok {
			if err := setField(cfg, f, v); err != nil {
				errs = append(errs, fmt.Errorf("%s (flag --%s): %w", f.flag, f.flag, err))
			}
		}
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid config: %w", errors.Join(errs...))
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func loadFile(cfg *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	known := map[string]fieldInfo{}
	forEachField(func(f fieldInfo) {
		known[f.flag] = f
		known[strings.ReplaceAll(f.flag, "-", "_")] = f
	})
	var errs []error
	for k, v := range m {
		f, ok := known[k]
		if !ok {
			errs = append(errs, fmt.Errorf("config file %s: unknown setting %q", path, k))
			continue
		}
		if err := setField(cfg, f, fmt.Sprint(v)); err != nil {
			errs = append(errs, fmt.Errorf("%s (file %s): %w", f.flag, path, err))
		}
	}
	return errors.Join(errs...)
}

type fieldInfo struct {
	index  int
	kind   reflect.Kind
	typ    reflect.Type
	flag   string
	env    string
	def    string
	usage  string
	secret bool
}

var durationType = reflect.TypeOf(time.Duration(0))

// The cluster name and node id become NATS subject tokens and KV bucket
// and key names (internal/cluster checks the same).
var (
	clusterNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	nodeIDRe      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

func forEachField(fn func(fieldInfo)) {
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		fn(fieldInfo{index: i, kind: sf.Type.Kind(), typ: sf.Type, flag: sf.Tag.Get("flag"),
			env: sf.Tag.Get("env"), def: sf.Tag.Get("default"), usage: sf.Tag.Get("usage"),
			secret: sf.Tag.Get("secret") == "true"})
	}
}

func setField(cfg *Config, f fieldInfo, s string) error {
	v := reflect.ValueOf(cfg).Elem().Field(f.index)
	switch {
	case f.typ == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration (use Go syntax like 500ms, 6s): %q", s)
		}
		v.SetInt(int64(d))
	case f.kind == reflect.String:
		v.SetString(s)
	case f.kind == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		v.SetBool(b)
	case f.kind == reflect.Int || f.kind == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		v.SetInt(n)
	case f.kind == reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		v.SetFloat(x)
	default:
		return fmt.Errorf("unsupported kind %s", f.kind)
	}
	return nil
}

// Validate checks every field and names the first bad ones.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("invalid config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("http-addr", "not host:port: %q", c.HTTPAddr)
	}
	if c.DataDir == "" && c.StoreDriver == "sqlite" {
		bad("data-dir", "must not be empty")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format", "must be text or json, got %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	for name, v := range map[string]string{"auth-secret": c.AuthSecret, "api-key": c.APIKey, "webhook-secret": c.WebhookSecret} {
		if v == "" {
			continue
		}
		if why := weakSecret(v); why != "" {
			bad(name, "%s", why)
		}
	}
	positiveDur := map[string]time.Duration{
		"heartbeat-interval": c.HeartbeatInterval, "heartbeat-timeout": c.HeartbeatTimeout,
		"write-timeout": c.WriteTimeout, "violation-window": c.ViolationWindow,
		"typing-timeout": c.TypingTimeout, "shutdown-timeout": c.ShutdownTimeout,
		"access-token-ttl": c.AccessTokenTTL, "refresh-token-ttl": c.RefreshTokenTTL,
		"turn-credential-ttl": c.TURNCredentialTTL, "password-hash-wait": c.PasswordHashWait,
		"http-read-header-timeout": c.HTTPReadHeaderTimeout, "http-read-timeout": c.HTTPReadTimeout,
		"http-write-timeout": c.HTTPWriteTimeout, "http-idle-timeout": c.HTTPIdleTimeout,
	}
	for name, d := range positiveDur {
		if d <= 0 {
			bad(name, "must be positive, got %s", d)
		}
	}
	if c.PresenceOfflineGrace < 0 {
		bad("presence-offline-grace", "must not be negative")
	}
	if c.LargeRoomInterval < 10*time.Millisecond || c.LargeRoomInterval > 10*time.Second {
		bad("large-room-interval", "must be between 10ms and 10s, got %s", c.LargeRoomInterval)
	}
	if c.PresenceUpdateInterval < 0 {
		bad("presence-update-interval", "must not be negative")
	}
	if c.AuthLeeway < 0 {
		bad("auth-leeway", "must not be negative")
	}
	if c.WSCompressionThreshold < 0 {
		bad("ws-compression-threshold", "must not be negative")
	}
	if c.HeartbeatTimeout > 0 && c.HeartbeatInterval >= c.HeartbeatTimeout {
		bad("heartbeat-timeout", "must be longer than heartbeat-interval (%s)", c.HeartbeatInterval)
	}
	positiveInt := map[string]int{
		"max-message-bytes": c.MaxMessageBytes, "queue-max-bytes": c.QueueMaxBytes,
		"msg-burst": c.MsgBurst, "rate-limit-strikes": c.RateLimitStrikes, "violation-limit": c.ViolationLimit,
		"storage-max-bytes": c.StorageMaxBytes, "storage-max-ops": c.StorageMaxOps, "storage-max-depth": c.StorageMaxDepth,
		"storage-keep-updates": c.StorageKeepUpdates, "storage-keep-updates-bytes": c.StorageKeepUpdatesBytes, "snapshot-every": c.SnapshotEvery,
		"presence-max-bytes": c.PresenceMaxBytes, "commit-max-batch": c.CommitMaxBatch,
		"max-rooms-per-connection": c.MaxRoomsPerConn, "large-room-members": c.LargeRoomMembers,
		"message-max-chars": c.MessageMaxChars, "login-burst": c.LoginBurst,
		"login-ip-burst": c.LoginIPBurst, "login-user-burst": c.LoginUserBurst, "register-burst": c.RegisterBurst,
		"password-hash-concurrency": c.PasswordHashConcurrency,
	}
	for name, n := range positiveInt {
		if n <= 0 {
			bad(name, "must be positive, got %d", n)
		}
	}
	if c.MaxMessageBytes > 0 && c.QueueMaxBytes < c.MaxMessageBytes {
		bad("queue-max-bytes", "must be at least max-message-bytes (%d)", c.MaxMessageBytes)
	}
	if c.MsgRate <= 0 {
		bad("msg-rate", "must be positive")
	}
	if c.MsgBytesRate < 0 {
		bad("msg-bytes-rate", "must be 0 (off) or positive")
	}
	if c.RESTRate <= 0 {
		bad("rest-rate", "must be positive")
	}
	for name, r := range map[string]float64{"login-rate": c.LoginRate, "login-ip-rate": c.LoginIPRate,
		"login-user-rate": c.LoginUserRate, "register-rate": c.RegisterRate} {
		if r <= 0 {
			bad(name, "must be positive")
		}
	}
	if c.PasswordHashWait > 0 && c.HTTPWriteTimeout > 0 && c.PasswordHashWait >= c.HTTPWriteTimeout {
		bad("password-hash-wait", "must be shorter than http-write-timeout (%s), or the answer could never be written", c.HTTPWriteTimeout)
	}
	if c.HTTPMaxConns < 0 {
		bad("http-max-connections", "must not be negative")
	}
	if c.MaxConnections < 0 {
		bad("max-connections", "must not be negative")
	}
	if c.MaxConnsPerUser < 0 {
		bad("max-connections-per-user", "must not be negative")
	}
	if c.MaxConnsPerIP < 0 {
		bad("max-connections-per-ip", "must not be negative")
	}
	for _, o := range c.CORSOriginList() {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			bad("cors-origins", "%q is not an origin (scheme://host[:port]) or *", o)
		}
	}
	c.validateWebhooks(bad)
	if c.RESTMaxBodyBytes <= 0 {
		bad("rest-max-body-bytes", "must be positive")
	}
	if c.PresenceAudience != "all" && c.PresenceAudience != "shared" {
		bad("presence-audience", "must be all or shared, got %q", c.PresenceAudience)
	}
	switch c.StoreDriver {
	case "sqlite":
	case "postgres":
		if c.PostgresURL == "" {
			bad("postgres-url", "required when store=postgres")
		}
	default:
		bad("store", "must be sqlite or postgres, got %q", c.StoreDriver)
	}
	switch c.Broker {
	case "local":
	case "nats":
		if c.NATSURL == "" {
			bad("nats-url", "required when broker=nats")
		}
		if c.StoreDriver != "postgres" {
			bad("store", "broker=nats needs a shared store: set store=postgres")
		}
	default:
		bad("broker", "must be local or nats, got %q", c.Broker)
	}
	if !clusterNameRe.MatchString(c.ClusterName) {
		bad("cluster-name", "must be 1-32 characters of A-Z a-z 0-9 _ - (a NATS subject token), got %q", c.ClusterName)
	}
	if c.NodeID != "" && !nodeIDRe.MatchString(c.NodeID) {
		bad("node-id", "must be 1-64 characters of A-Z a-z 0-9 _ - (a NATS subject token), got %q", c.NodeID)
	}
	if c.NodeHeartbeat <= 0 {
		bad("node-heartbeat", "must be positive, got %s", c.NodeHeartbeat)
	}
	switch {
	case c.NodeDeadAfter >= 15*time.Second:
		bad("node-dead-after", "must be less than 15s (a dead node must be noticed within 15 s), got %s", c.NodeDeadAfter)
	case c.NodeHeartbeat > 0 && c.NodeDeadAfter <= 2*c.NodeHeartbeat:
		bad("node-dead-after", "must be more than twice node-heartbeat (%s), got %s", c.NodeHeartbeat, c.NodeDeadAfter)
	}
	if c.MediaWorkers < 0 {
		bad("media-workers", "must not be negative")
	}
	if c.MediaTransportTimeout < 0 {
		bad("media-transport-timeout", "must not be negative")
	}
	if c.MediaCallIdleTimeout < 0 {
		bad("media-call-idle-timeout", "must not be negative")
	}
	for name, p := range map[string]int{"media-rtc-min-port": c.MediaRTCMinPort, "media-rtc-max-port": c.MediaRTCMaxPort,
		"media-udp-port": c.MediaUDPPort, "media-tcp-port": c.MediaTCPPort, "turn-embedded-port": c.TURNEmbeddedPort} {
		if p < 0 || p > 65535 {
			bad(name, "not a port: %d", p)
		}
	}
	if c.MediaDataMaxMessageSize < 1024 || c.MediaDataMaxMessageSize > 1<<20 {
		bad("media-data-max-message-size", "must be 1024 to 1048576, got %d", c.MediaDataMaxMessageSize)
	}
	if c.MediaDataSendBuffer < c.MediaDataMaxMessageSize {
		bad("media-data-send-buffer", "must be at least media-data-max-message-size (%d), got %d", c.MediaDataMaxMessageSize, c.MediaDataSendBuffer)
	}
	if c.MediaRTCMinPort > c.MediaRTCMaxPort {
		bad("media-rtc-min-port", "greater than media-rtc-max-port")
	}
	for name, ip := range map[string]string{"media-listen-ip": c.MediaListenIP, "media-announced-ip": c.MediaAnnouncedIP,
		"turn-embedded-listen-ip": c.TURNEmbeddedListen} {
		if ip != "" && net.ParseIP(ip) == nil {
			bad(name, "not an IP address: %q", ip)
		}
	}
	if c.TURNEmbedded && c.TURNSharedSecret == "" {
		bad("turn-shared-secret", "required by turn-embedded (credentials use the shared-secret scheme)")
	}
	return errors.Join(errs...)
}

// CORSOriginList is cors-origins as a list (trimmed, empty entries
// dropped); under --dev an empty setting is ["*"].
func (c *Config) CORSOriginList() []string {
	var out []string
	for _, o := range strings.Split(c.CORSOrigins, ",") {
		if o = strings.TrimSuffix(strings.TrimSpace(o), "/"); o != "" {
			out = append(out, o)
		}
	}
	if len(out) == 0 && c.Dev {
		out = []string{"*"}
	}
	return out
}

// MinWebhookRetryFor is the shortest webhook-retry-for accepted: PROTOCOL.md
// v1.1 §7 promises retries for at least 10 minutes.
const MinWebhookRetryFor = 10 * time.Minute

// validateWebhooks checks the webhook settings: every URL absolute http
// or https, a secret whenever there is a URL, bounded queue and
// concurrency, retries for at least MinWebhookRetryFor.
func (c *Config) validateWebhooks(bad func(field, format string, args ...any)) {
	urls := c.WebhookURLList()
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.User != nil {
			bad("webhook-url", "%q is not an absolute http or https URL without credentials", u)
		}
	}
	if len(urls) > 0 && c.WebhookSecret == "" {
		bad("webhook-secret", "required with webhook-url: receivers need it to verify the Parley-Signature header; set PARLEY_WEBHOOK_SECRET (e.g. openssl rand -base64 32)")
	}
	if c.WebhookQueueSize <= 0 {
		bad("webhook-queue-size", "must be positive, got %d", c.WebhookQueueSize)
	}
	if c.WebhookTimeout <= 0 {
		bad("webhook-timeout", "must be positive, got %s", c.WebhookTimeout)
	}
	if c.WebhookRetryFor < MinWebhookRetryFor {
		bad("webhook-retry-for", "must be at least %s (deliveries are retried for at least 10 minutes), got %s", MinWebhookRetryFor, c.WebhookRetryFor)
	}
	if c.WebhookConcurrency < 1 || c.WebhookConcurrency > 64 {
		bad("webhook-concurrency", "must be 1 to 64, got %d", c.WebhookConcurrency)
	}
}

// WebhookURLList is webhook-url as a list (trimmed, empty entries dropped).
func (c *Config) WebhookURLList() []string {
	var out []string
	for _, u := range strings.Split(c.WebhookURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}
