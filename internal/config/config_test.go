package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	fs := FlagSet("test")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs, func(k string) string { return env[k] })
}

func TestDefaults(t *testing.T) {
	c, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:7880" || c.DataDir != "./data" || c.HeartbeatInterval != 30*time.Second ||
		c.HeartbeatTimeout != 120*time.Second || c.MaxMessageBytes != 65536 || c.QueueMaxBytes != 1<<20 ||
		c.TypingTimeout != 6*time.Second || c.PresenceOfflineGrace != 5*time.Second || c.StorageMaxBytes != 1<<20 ||
		c.StorageMaxOps != 100 || c.PresenceMaxBytes != 4096 || c.StoreDriver != "sqlite" || c.Broker != "local" {
		t.Fatalf("defaults: %+v", c)
	}
}

// flags beat env beat file beat defaults.
func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "parley.yaml")
	yaml := "http-addr: 127.0.0.1:1111\ndata_dir: /from/file\ntyping-timeout: 2s\nmax-message-bytes: 1000\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PARLEY_CONFIG": file, "PARLEY_DATA_DIR": "/from/env", "PARLEY_HTTP_ADDR": "127.0.0.1:2222"}
	c, err := load(t, []string{"--http-addr", "127.0.0.1:3333"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:3333" || c.DataDir != "/from/env" || c.TypingTimeout != 2*time.Second ||
		c.MaxMessageBytes != 1000 || c.HeartbeatInterval != 30*time.Second {
		t.Fatalf("precedence: addr %s dir %s typing %s max %d", c.HTTPAddr, c.DataDir, c.TypingTimeout, c.MaxMessageBytes)
	}
	// --config flag beats PARLEY_CONFIG.
	other := filepath.Join(t.TempDir(), "other.yaml")
	_ = os.WriteFile(other, []byte("log-format: json\n"), 0o600)
	c, err = load(t, []string{"--config", other}, map[string]string{"PARLEY_CONFIG": file})
	if err != nil || c.LogFormat != "json" || c.HTTPAddr != "127.0.0.1:7880" {
		t.Fatalf("config flag: %+v %v", c, err)
	}
}

func TestInvalidNamesField(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(file, []byte("no-such-setting: 1\n"), 0o600)
	cases := []struct {
		args  []string
		env   map[string]string
		field string
	}{
		{[]string{"--heartbeat-interval", "soon"}, nil, "heartbeat-interval"},
		{nil, map[string]string{"PARLEY_MAX_MESSAGE_BYTES": "lots"}, "PARLEY_MAX_MESSAGE_BYTES"},
		{[]string{"--max-message-bytes", "0"}, nil, "max-message-bytes"},
		{[]string{"--queue-max-bytes", "10"}, nil, "queue-max-bytes"},
		{[]string{"--heartbeat-timeout", "1s", "--heartbeat-interval", "2s"}, nil, "heartbeat-timeout"},
		{[]string{"--auth-secret", "short"}, nil, "auth-secret"},
		{[]string{"--store", "mysql"}, nil, "store"},
		{[]string{"--store", "postgres"}, nil, "postgres-url"},
		{[]string{"--broker", "nats"}, nil, "store"},
		{[]string{"--presence-audience", "friends"}, nil, "presence-audience"},
		{[]string{"--media-listen-ip", "not-an-ip"}, nil, "media-listen-ip"},
		{[]string{"--media-rtc-min-port", "5000", "--media-rtc-max-port", "4000"}, nil, "media-rtc-min-port"},
		{[]string{"--turn-embedded"}, nil, "turn-shared-secret"},
		{[]string{"--config", file}, nil, "no-such-setting"},
		{[]string{"--config", "/does/not/exist.yaml"}, nil, "config file"},
		{[]string{"--cluster-name", ""}, nil, "cluster-name"},
		{[]string{"--cluster-name", "prod.eu"}, nil, "cluster-name"},
		{nil, map[string]string{"PARLEY_CLUSTER_NAME": "a*"}, "cluster-name"},
		{[]string{"--cluster-name", strings.Repeat("x", 33)}, nil, "cluster-name"},
		{[]string{"--node-id", "node 1"}, nil, "node-id"},
		{nil, map[string]string{"PARLEY_NODE_ID": "n.1"}, "node-id"},
		{[]string{"--node-id", strings.Repeat("n", 65)}, nil, "node-id"},
		{[]string{"--node-heartbeat", "0s"}, nil, "node-heartbeat"},
		{[]string{"--cors-origins", "app.example.com"}, nil, "cors-origins"},
		{nil, map[string]string{"PARLEY_CORS_ORIGINS": "https://a.example, ftp://b.example"}, "cors-origins"},
		{[]string{"--cors-origins", "https://a.example/path"}, nil, "cors-origins"},
		{[]string{"--node-dead-after", "15s"}, nil, "node-dead-after"},
		{nil, map[string]string{"PARLEY_NODE_DEAD_AFTER": "4s"}, "node-dead-after"},
		{[]string{"--node-heartbeat", "3s", "--node-dead-after", "6s"}, nil, "node-dead-after"},
	}
	for _, tc := range cases {
		_, err := load(t, tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%v %v: error %v, want it to name %q", tc.args, tc.env, err, tc.field)
		}
	}
}

// The cluster settings: defaults, the accepted extremes, and env names.
func TestClusterSettings(t *testing.T) {
	c, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterName != "parley" || c.NodeID != "" || c.NodeHeartbeat != 2*time.Second || c.NodeDeadAfter != 10*time.Second {
		t.Fatalf("defaults: cluster %q node %q heartbeat %s dead-after %s", c.ClusterName, c.NodeID, c.NodeHeartbeat, c.NodeDeadAfter)
	}
	env := map[string]string{"PARLEY_CLUSTER_NAME": "eu_West-1", "PARLEY_NODE_ID": strings.Repeat("n", 64),
		"PARLEY_NODE_HEARTBEAT": "500ms", "PARLEY_NODE_DEAD_AFTER": "14.9s"}
	c, err = load(t, nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterName != "eu_West-1" || len(c.NodeID) != 64 || c.NodeHeartbeat != 500*time.Millisecond || c.NodeDeadAfter != 14900*time.Millisecond {
		t.Fatalf("from env: %q %q %s %s", c.ClusterName, c.NodeID, c.NodeHeartbeat, c.NodeDeadAfter)
	}
	c, err = load(t, []string{"--cluster-name", strings.Repeat("c", 32), "--node-heartbeat", "1s", "--node-dead-after", "2001ms"}, nil)
	if err != nil || len(c.ClusterName) != 32 || c.NodeDeadAfter != 2001*time.Millisecond {
		t.Fatalf("from flags: %+v %v", c, err)
	}
}

// Every setting has a flag, an env var and a default, and README documents
// it, so the docs cannot drift from the code.
func TestEverySettingDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(Config{})
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		flag, env := f.Tag.Get("flag"), f.Tag.Get("env")
		if flag == "" || !strings.HasPrefix(env, "PARLEY_") || f.Tag.Get("usage") == "" {
			t.Errorf("field %s lacks flag/env/usage tags", f.Name)
		}
		if !strings.Contains(string(readme), "`"+env+"`") || !strings.Contains(string(readme), "`--"+flag+"`") {
			t.Errorf("README does not document %s / --%s", env, flag)
		}
	}
}

// api-key, like auth-secret, needs 16 bytes: 15 is refused, 16 accepted.
func TestAPIKeyMinLength(t *testing.T) {
	if _, err := load(t, []string{"--api-key", "k"}, nil); err == nil || !strings.Contains(err.Error(), "api-key") {
		t.Fatalf("1-byte api-key: %v", err)
	}
	if _, err := load(t, nil, map[string]string{"PARLEY_API_KEY": "0123456789abcde"}); err == nil || !strings.Contains(err.Error(), "api-key") {
		t.Fatalf("15-byte api-key: %v", err)
	}
	c, err := load(t, nil, map[string]string{"PARLEY_API_KEY": "0123456789abcdef"})
	if err != nil || c.APIKey != "0123456789abcdef" {
		t.Fatalf("16-byte api-key: %v", err)
	}
}

// Keys of the right length that are no secret are refused with an error
// naming the setting: surrounding whitespace (15 spaces and an x, the
// reported one), one repeated character, too few distinct bytes. The same
// rule holds for auth-secret.
func TestWeakSecretsRefused(t *testing.T) {
	for _, setting := range []string{"api-key", "auth-secret"} {
		env := "PARLEY_" + strings.ToUpper(strings.ReplaceAll(setting, "-", "_"))
		for v, why := range map[string]string{
			strings.Repeat(" ", 15) + "x":         "whitespace",
			"0123456789abcdef\n":                  "whitespace",
			"\t0123456789abcdef":                  "whitespace",
			strings.Repeat("k", 32):               "distinct bytes",
			strings.Repeat("ab", 16):              "distinct bytes",
			strings.Repeat("abcdefg", 3):          "distinct bytes", // 7 distinct
			strings.Repeat(" ", 8) + "0123456789": "whitespace",
		} {
			_, err := load(t, nil, map[string]string{env: v})
			if err == nil || !strings.Contains(err.Error(), setting) || !strings.Contains(err.Error(), why) {
				t.Errorf("%s=%q: %v, want a refusal naming %s (%s)", setting, v, err, setting, why)
			}
		}
		ok := strings.Repeat("abcdefgh", 2) // 8 distinct bytes, 16 long: the minimum
		if _, err := load(t, nil, map[string]string{env: ok}); err != nil {
			t.Errorf("%s=%q refused: %v", setting, ok, err)
		}
		if _, err := load(t, nil, map[string]string{env: "in side spaces ok-0123"}); err != nil {
			t.Errorf("%s with inner spaces refused: %v", setting, err)
		}
	}
}

// Secret settings can come from PARLEY_*_FILE; the plain variable wins.
func TestSecretFromFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "api-key")
	if err := os.WriteFile(key, []byte("file-api-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load(t, nil, map[string]string{"PARLEY_API_KEY_FILE": key, "PARLEY_AUTH_SECRET_FILE": key})
	if err != nil || c.APIKey != "file-api-key-0123456789" || c.AuthSecret != "file-api-key-0123456789" {
		t.Fatalf("from file: %+v %v", c, err)
	}
	c, err = load(t, nil, map[string]string{"PARLEY_API_KEY_FILE": key, "PARLEY_API_KEY": "env-api-key-0123456789"})
	if err != nil || c.APIKey != "env-api-key-0123456789" {
		t.Fatalf("env over file: %v %v", c.APIKey, err)
	}
	if _, err := load(t, nil, map[string]string{"PARLEY_API_KEY_FILE": filepath.Join(dir, "missing")}); err == nil ||
		!strings.Contains(err.Error(), "PARLEY_API_KEY_FILE") {
		t.Fatalf("missing file: %v", err)
	}
	// Only secrets have a _FILE form.
	c, err = load(t, nil, map[string]string{"PARLEY_HTTP_ADDR_FILE": key})
	if err != nil || c.HTTPAddr != "127.0.0.1:7880" {
		t.Fatalf("non-secret _FILE: %v %v", c.HTTPAddr, err)
	}
}

func TestSecretFlagsSet(t *testing.T) {
	fs := FlagSet("test")
	if err := fs.Parse([]string{"--api-key", "flag-api-key-0123456789", "--turn-password", "pw", "--http-addr", "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	got := SecretFlagsSet(fs)
	want := []SecretFlag{{"api-key", "PARLEY_API_KEY"}, {"turn-password", "PARLEY_TURN_PASSWORD"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("secret flags %v, want %v", got, want)
	}
	if got := SecretFlagsSet(FlagSet("none")); len(got) != 0 {
		t.Fatalf("nothing set: %v", got)
	}
}

// Every new limit has a working default and refuses a value past its edge.
func TestHardeningLimits(t *testing.T) {
	c, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.RegisterRate != 0.05 || c.RegisterBurst != 5 || c.LoginIPBurst != 30 || c.LoginUserBurst != 100 ||
		c.PasswordHashConcurrency != 4 || c.PasswordHashWait != 5*time.Second || c.HTTPIdleTimeout != time.Minute ||
		c.HTTPReadTimeout != 30*time.Second || c.HTTPWriteTimeout != 30*time.Second || c.HTTPMaxConns != 1024 {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range [][]string{
		{"--register-rate", "0"}, {"--register-burst", "0"}, {"--login-ip-rate", "0"}, {"--login-ip-burst", "0"},
		{"--login-user-rate", "-1"}, {"--login-user-burst", "0"}, {"--password-hash-concurrency", "0"},
		{"--password-hash-wait", "0s"}, {"--http-read-timeout", "0s"}, {"--http-write-timeout", "0s"},
		{"--http-idle-timeout", "0s"}, {"--http-read-header-timeout", "0s"}, {"--http-max-connections", "-1"},
		{"--password-hash-wait", "30s"}, // not shorter than http-write-timeout
	} {
		if _, err := load(t, bad, nil); err == nil || !strings.Contains(err.Error(), bad[0][2:]) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	c, err = load(t, []string{"--password-hash-concurrency", "1", "--http-max-connections", "0", "--register-burst", "1"}, nil)
	if err != nil || c.PasswordHashConcurrency != 1 || c.HTTPMaxConns != 0 || c.RegisterBurst != 1 {
		t.Fatalf("edge values: %v", err)
	}
}

// Webhooks: a URL list needs a secret, the secret follows the weak-secret
// rules, URLs must be absolute http(s), retries last at least 10 minutes.
func TestWebhookSettings(t *testing.T) {
	const good = "whsec-0123456789abcdef"
	c, err := load(t, nil, map[string]string{"PARLEY_WEBHOOK_URL": " http://127.0.0.1:9/hook , https://example.com/h ,",
		"PARLEY_WEBHOOK_SECRET": good})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.WebhookURLList(); !reflect.DeepEqual(got, []string{"http://127.0.0.1:9/hook", "https://example.com/h"}) {
		t.Fatalf("urls %q", got)
	}
	if c.WebhookQueueSize != 10000 || c.WebhookTimeout != 10*time.Second || c.WebhookRetryFor != 15*time.Minute || c.WebhookConcurrency != 4 {
		t.Fatalf("webhook defaults: %+v", c)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PARLEY_WEBHOOK_URL": "http://127.0.0.1:9/hook"}, "webhook-secret: required"},
		{map[string]string{"PARLEY_WEBHOOK_URL": "http://x/h", "PARLEY_WEBHOOK_SECRET": "short"}, "webhook-secret: must be at least"},
		{map[string]string{"PARLEY_WEBHOOK_URL": "http://x/h", "PARLEY_WEBHOOK_SECRET": "aaaaaaaaaaaaaaaaaaaaaaaa"}, "webhook-secret: must hold at least"},
		{map[string]string{"PARLEY_WEBHOOK_URL": "ftp://x/h", "PARLEY_WEBHOOK_SECRET": good}, "webhook-url"},
		{map[string]string{"PARLEY_WEBHOOK_URL": "/relative", "PARLEY_WEBHOOK_SECRET": good}, "webhook-url"},
		{map[string]string{"PARLEY_WEBHOOK_URL": "http://u:p@x/h", "PARLEY_WEBHOOK_SECRET": good}, "webhook-url"},
		{map[string]string{"PARLEY_WEBHOOK_RETRY_FOR": "9m"}, "webhook-retry-for: must be at least 10m"},
		{map[string]string{"PARLEY_WEBHOOK_QUEUE_SIZE": "0"}, "webhook-queue-size"},
		{map[string]string{"PARLEY_WEBHOOK_CONCURRENCY": "65"}, "webhook-concurrency"},
		{map[string]string{"PARLEY_WEBHOOK_TIMEOUT": "0s"}, "webhook-timeout"},
	} {
		_, err := load(t, nil, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.env, err, tc.want)
		}
	}
}
