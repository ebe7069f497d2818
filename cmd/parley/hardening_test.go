package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// vmHWM is the peak resident set size of pid in KiB.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Skip("no VmHWM")
	return 0
}

// 40 parallel registrations (each an argon2id hash of 19 MiB) keep the
// binary's peak RSS bounded by password-hash-concurrency: measured 786 MiB
// before the hashing gate, about 210 MiB after (the register rate limit is
// lifted here to measure the gate alone).
func TestRegisterMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	p := startServer(t, bin, []string{"PARLEY_AUTH_SECRET=" + testSecret, "PARLEY_DATA_DIR=" + t.TempDir(),
		"PARLEY_HTTP_ADDR=127.0.0.1:0", "PARLEY_REGISTER_BURST=1000", "PARLEY_PASSWORD_HASH_WAIT=2m",
		"PARLEY_HTTP_WRITE_TIMEOUT=3m"})
	const n = 40
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := fmt.Sprintf(`{"username":"user%03d","password":"password-%03d"}`, i, i)
			resp, err := http.Post("http://"+p.addr+"/api/auth/register", "application/json", bytes.NewBufferString(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}(i)
	}
	wg.Wait()
	for i, c := range codes {
		if c != 201 {
			t.Errorf("registration %d: %d", i, c)
		}
	}
	const limitKiB = 400 * 1024
	if peak := vmHWM(t, p.cmd.Process.Pid); peak > limitKiB {
		t.Fatalf("peak RSS %d MiB after %d parallel registrations, want < %d MiB", peak/1024, n, limitKiB/1024)
	} else {
		t.Logf("peak RSS %d MiB", peak/1024)
	}
}

// A secret given as a flag logs one warning naming the flag and the
// environment variable; the same secret in the environment does not.
func TestSecretFlagWarns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	env := []string{"PARLEY_AUTH_SECRET=" + testSecret, "PARLEY_DATA_DIR=" + t.TempDir(), "PARLEY_HTTP_ADDR=127.0.0.1:0"}
	warned := func(p *proc) []string {
		p.mu.Lock()
		defer p.mu.Unlock()
		var out []string
		for _, l := range p.stderr {
			if strings.Contains(l, "secret passed as a flag") {
				out = append(out, l)
			}
		}
		return out
	}
	p := startServer(t, bin, env, "--api-key", "flag-api-key-0123456789")
	w := warned(p) // the warning is logged before "listening", which startServer waited for
	if len(w) != 1 || !strings.Contains(w[0], "--api-key") || !strings.Contains(w[0], "PARLEY_API_KEY") ||
		!strings.Contains(w[0], "PARLEY_API_KEY_FILE") {
		t.Fatalf("warnings: %q", w)
	}
	p2 := startServer(t, bin, append(env, "PARLEY_API_KEY=env-api-key-0123456789"))
	if w := warned(p2); len(w) != 0 {
		t.Fatalf("warned without a secret flag: %q", w)
	}
}

// A 1-byte --api-key stops the server at start with a message naming it.
func TestShortAPIKeyRefused(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"serve", "--auth-secret", testSecret, "--api-key", "k", "--data-dir", t.TempDir()}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "api-key") || !strings.Contains(stderr.String(), "16 bytes") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}
