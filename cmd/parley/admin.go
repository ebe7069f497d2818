package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parleyhq/parley/internal/webhook"
)

// The operator commands (docs/server-api.md, "CLI"): they speak the
// server API of a running Parley with the API key.
//
//	parley rooms list
//	parley rooms connections ROOM
//	parley rooms broadcast ROOM JSON
//	parley users disconnect USER [--reason R]
//	parley webhooks verify --secret S [--tolerance 5m] < request
//
// Exit codes: 0 done; 1 the server refused or could not be reached, or a
// signature did not verify; 2 a usage error.

// stdin is what broadcast - and webhooks verify read (tests replace it).
var stdin io.Reader = os.Stdin

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// client is the server API as the commands use it.
type client struct {
	base   string
	key    string
	http   *http.Client
	asJSON bool
	stdout io.Writer
	stderr io.Writer
	prog   string // "parley rooms list", for messages
}

// apiFlags adds --url, --api-key, --json and --timeout to fs.
type apiFlags struct {
	url, key *string
	asJSON   *bool
	timeout  *time.Duration
}

func addAPIFlags(fs *flag.FlagSet) apiFlags {
	def := os.Getenv("PARLEY_URL")
	if def == "" {
		def = "http://127.0.0.1:7880"
	}
	return apiFlags{
		url:     fs.String("url", def, "base URL of a Parley node (env PARLEY_URL)"),
		key:     fs.String("api-key", "", "the server API key (env PARLEY_API_KEY; prefer the environment: a flag shows in ps)"),
		asJSON:  fs.Bool("json", false, "print the server's JSON answer (for scripts) instead of a table"),
		timeout: fs.Duration("timeout", 30*time.Second, "give up on the request after this long"),
	}
}

func (f apiFlags) client(prog string, stdout, stderr io.Writer) (*client, error) {
	key := *f.key
	if key == "" {
		key = os.Getenv("PARLEY_API_KEY")
	}
	if key == "" {
		return nil, errors.New("no API key: set PARLEY_API_KEY (or --api-key)")
	}
	u, err := url.Parse(*f.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http(s)://host[:port]", *f.url)
	}
	return &client{base: strings.TrimRight(*f.url, "/"), key: key, http: &http.Client{Timeout: *f.timeout},
		asJSON: *f.asJSON, stdout: stdout, stderr: stderr, prog: prog}, nil
}

// apiError is a non-2xx answer.
type apiError struct {
	status        int
	code, message string
}

func (e *apiError) Error() string {
	if e.code == "" {
		return fmt.Sprintf("HTTP %d", e.status)
	}
	return fmt.Sprintf("%s (HTTP %d): %s", e.code, e.status, e.message)
}

// do sends one request and returns the answer's body when it is 2xx.
func (c *client) do(method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(out, &e)
		return nil, &apiError{status: resp.StatusCode, code: e.Error, message: e.Message}
	}
	return out, nil
}

// fail prints err and returns its exit code.
func (c *client) fail(err error) int {
	fmt.Fprintf(c.stderr, "%s: %v\n", c.prog, err)
	return exitFail
}

// printJSON writes the server's answer as it came (one line).
func (c *client) printJSON(b []byte) {
	fmt.Fprintln(c.stdout, strings.TrimSpace(string(b)))
}

// parseArgs parses flags that may come before, between or after the
// positional arguments (Go's flag package stops at the first of these);
// "--" ends the flags.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// newFlagSet is a flag set whose -h prints synopsis and the flags.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// ---- parley rooms ----

func roomsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, `usage: parley rooms <command> [flags]

commands:
  list                     the live rooms and their connection counts (all nodes)
  connections ROOM         the connections of a live room, with presence
  broadcast ROOM JSON      send JSON to every connection of the room as room:event ("-" reads it from stdin)

Run 'parley rooms <command> -h' for the flags.
`)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "list":
		return roomsList(args[1:], stdout, stderr)
	case "connections":
		return roomsConnections(args[1:], stdout, stderr)
	case "broadcast":
		return roomsBroadcast(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "parley rooms: unknown command %q (list, connections, broadcast)\n", args[0])
	return exitUsage
}

func roomsList(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("parley rooms list", "parley rooms list [--limit N] [--after ROOM] [--url URL] [--json]", stderr)
	af := addAPIFlags(fs)
	limit := fs.Int("limit", 0, "at most this many rooms (1-1000, one page); 0 lists every page")
	after := fs.String("after", "", "start after this room id (the next_after of a previous page)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageExit(err)
	}
	if len(pos) != 0 {
		fmt.Fprintln(stderr, "parley rooms list: takes no arguments")
		return exitUsage
	}
	if *limit < 0 || *limit > 1000 {
		fmt.Fprintln(stderr, "parley rooms list: --limit must be 0 to 1000")
		return exitUsage
	}
	c, err := af.client("parley rooms list", stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "parley rooms list:", err)
		return exitUsage
	}
	type page struct {
		Items []struct {
			RoomID      string `json:"room_id"`
			Connections int    `json:"connections"`
		} `json:"items"`
		NextAfter    *string  `json:"next_after"`
		MissingNodes []string `json:"missing_nodes,omitempty"`
	}
	var all page
	cursor := *after
	for {
		n := *limit
		if n == 0 {
			n = 1000
		}
		q := url.Values{"limit": {fmt.Sprint(n)}}
		if cursor != "" {
			q.Set("after", cursor)
		}
		b, err := c.do("GET", "/api/live/rooms?"+q.Encode(), nil)
		if err != nil {
			return c.fail(err)
		}
		if *limit != 0 && c.asJSON {
			c.printJSON(b)
			return exitOK
		}
		var p page
		if err := json.Unmarshal(b, &p); err != nil {
			return c.fail(fmt.Errorf("unexpected answer: %v", err))
		}
		all.Items = append(all.Items, p.Items...)
		all.MissingNodes = append(all.MissingNodes, p.MissingNodes...)
		all.NextAfter = p.NextAfter
		if *limit != 0 || p.NextAfter == nil {
			break
		}
		cursor = *p.NextAfter
	}
	if all.Items == nil {
		all.Items = make([]struct {
			RoomID      string `json:"room_id"`
			Connections int    `json:"connections"`
		}, 0) // "items": [] in --json, not null
	}
	if c.asJSON {
		b, _ := json.Marshal(all)
		c.printJSON(b)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROOM\tCONNECTIONS")
	total := 0
	for _, r := range all.Items {
		fmt.Fprintf(tw, "%s\t%d\n", r.RoomID, r.Connections)
		total += r.Connections
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "%d live rooms, %d connections\n", len(all.Items), total)
	if all.NextAfter != nil {
		fmt.Fprintf(stdout, "more: --after %s\n", *all.NextAfter)
	}
	warnMissing(stderr, all.MissingNodes)
	return exitOK
}

func warnMissing(stderr io.Writer, nodes []string) {
	if len(nodes) > 0 {
		sort.Strings(nodes)
		fmt.Fprintf(stderr, "warning: nodes did not answer (their part is missing): %s\n", strings.Join(nodes, ", "))
	}
}

func roomsConnections(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("parley rooms connections", "parley rooms connections ROOM [--limit N] [--after ID] [--url URL] [--json]", stderr)
	af := addAPIFlags(fs)
	limit := fs.Int("limit", 0, "at most this many connections (1-1000, one page); 0 lists every page")
	after := fs.String("after", "", "start after this connection id")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageExit(err)
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "parley rooms connections: want exactly one ROOM")
		return exitUsage
	}
	if *limit < 0 || *limit > 1000 {
		fmt.Fprintln(stderr, "parley rooms connections: --limit must be 0 to 1000")
		return exitUsage
	}
	c, err := af.client("parley rooms connections", stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "parley rooms connections:", err)
		return exitUsage
	}
	type conn struct {
		ConnectionID string          `json:"connection_id"`
		UserID       string          `json:"user_id"`
		Name         string          `json:"name"`
		Presence     json.RawMessage `json:"presence"`
		JoinedAt     string          `json:"joined_at"`
	}
	type page struct {
		Items     []conn  `json:"items"`
		NextAfter *string `json:"next_after"`
	}
	var all page
	all.Items = []conn{}
	cursor := *after
	for {
		n := *limit
		if n == 0 {
			n = 1000
		}
		q := url.Values{"limit": {fmt.Sprint(n)}}
		if cursor != "" {
			q.Set("after", cursor)
		}
		b, err := c.do("GET", "/api/rooms/"+url.PathEscape(pos[0])+"/connections?"+q.Encode(), nil)
		if err != nil {
			return c.fail(err)
		}
		if *limit != 0 && c.asJSON {
			c.printJSON(b)
			return exitOK
		}
		var p page
		if err := json.Unmarshal(b, &p); err != nil {
			return c.fail(fmt.Errorf("unexpected answer: %v", err))
		}
		all.Items = append(all.Items, p.Items...)
		all.NextAfter = p.NextAfter
		if *limit != 0 || p.NextAfter == nil {
			break
		}
		cursor = *p.NextAfter
	}
	if c.asJSON {
		b, _ := json.Marshal(all)
		c.printJSON(b)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTION\tUSER\tNAME\tJOINED\tPRESENCE")
	for _, it := range all.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.ConnectionID, it.UserID, it.Name, it.JoinedAt, clip(string(it.Presence), 60))
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "%d connections in %s\n", len(all.Items), pos[0])
	if all.NextAfter != nil {
		fmt.Fprintf(stdout, "more: --after %s\n", *all.NextAfter)
	}
	return exitOK
}

// clip shortens s for a table cell.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func roomsBroadcast(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("parley rooms broadcast", "parley rooms broadcast ROOM JSON|- [--url URL] [--json]", stderr)
	af := addAPIFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageExit(err)
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "parley rooms broadcast: want ROOM and a JSON value (or - to read it from stdin)")
		return exitUsage
	}
	ev := []byte(pos[1])
	if pos[1] == "-" {
		if ev, err = io.ReadAll(io.LimitReader(stdin, 16<<20)); err != nil {
			fmt.Fprintln(stderr, "parley rooms broadcast: reading stdin:", err)
			return exitUsage
		}
	}
	ev = bytes.TrimSpace(ev)
	if !json.Valid(ev) {
		fmt.Fprintf(stderr, "parley rooms broadcast: %q is not JSON (a string needs its quotes: '\"hello\"')\n", clip(string(ev), 40))
		return exitUsage
	}
	c, err := af.client("parley rooms broadcast", stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "parley rooms broadcast:", err)
		return exitUsage
	}
	body, _ := json.Marshal(map[string]json.RawMessage{"event": ev})
	b, err := c.do("POST", "/api/rooms/"+url.PathEscape(pos[0])+"/broadcast", body)
	if err != nil {
		return c.fail(err)
	}
	if c.asJSON {
		c.printJSON(b)
		return exitOK
	}
	var a struct {
		Connections int `json:"connections"`
	}
	_ = json.Unmarshal(b, &a)
	fmt.Fprintf(stdout, "sent to %d connections in %s\n", a.Connections, pos[0])
	return exitOK
}

// ---- parley users ----

func usersCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "disconnect" {
		w, code := stderr, exitUsage
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			w, code = stdout, exitOK
		} else if len(args) > 0 {
			fmt.Fprintf(stderr, "parley users: unknown command %q\n", args[0])
		}
		fmt.Fprint(w, `usage: parley users disconnect USER [--reason R] [flags]

  disconnect USER   close every connection of USER on every node with close code 4003
                    (clients must not reconnect on their own); prints how many closed

Run 'parley users disconnect -h' for the flags.
`)
		return code
	}
	fs := newFlagSet("parley users disconnect", "parley users disconnect USER [--reason R] [--url URL] [--json]", stderr)
	af := addAPIFlags(fs)
	reason := fs.String("reason", "", "close reason shown to the clients (cut to 123 bytes)")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return usageExit(err)
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "parley users disconnect: want exactly one USER")
		return exitUsage
	}
	c, err := af.client("parley users disconnect", stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "parley users disconnect:", err)
		return exitUsage
	}
	var body []byte
	if *reason != "" {
		body, _ = json.Marshal(map[string]string{"reason": *reason})
	}
	b, err := c.do("POST", "/api/users/"+url.PathEscape(pos[0])+"/disconnect", body)
	if err != nil {
		return c.fail(err)
	}
	if c.asJSON {
		c.printJSON(b)
		return exitOK
	}
	var a struct {
		Closed       int      `json:"closed"`
		MissingNodes []string `json:"missing_nodes"`
	}
	_ = json.Unmarshal(b, &a)
	fmt.Fprintf(stdout, "closed %d connections of %s\n", a.Closed, pos[0])
	warnMissing(stderr, a.MissingNodes)
	return exitOK
}

// ---- parley webhooks ----

func webhooksCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		w, code := stderr, exitUsage
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			w, code = stdout, exitOK
		} else if len(args) > 0 {
			fmt.Fprintf(stderr, "parley webhooks: unknown command %q\n", args[0])
		}
		fmt.Fprint(w, `usage: parley webhooks verify --secret S [--tolerance 5m] [--signature H] < input

  verify   check a webhook's Parley-Signature against its body. The input on stdin is
           either a whole captured HTTP request (request line, headers, blank line, body;
           e.g. from 'nc -l 9000 > req.txt'), or the raw body with --signature, or a first
           line 'Parley-Signature: t=...,v1=...' followed by the raw body.
           Exit 0 valid, 1 invalid, 2 usage.
`)
		return code
	}
	fs := newFlagSet("parley webhooks verify", "parley webhooks verify --secret S [--tolerance 5m] [--signature H] [--json] < request", stderr)
	secret := fs.String("secret", "", "the webhook secret (env PARLEY_WEBHOOK_SECRET)")
	tolerance := fs.Duration("tolerance", 5*time.Minute, "largest accepted age of the signature's timestamp (0 = do not check)")
	signature := fs.String("signature", "", "the Parley-Signature header value, when stdin holds only the body")
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return usageExit(err)
	}
	if len(pos) != 0 {
		fmt.Fprintln(stderr, "parley webhooks verify: reads stdin; takes no arguments")
		return exitUsage
	}
	if *secret == "" {
		*secret = os.Getenv("PARLEY_WEBHOOK_SECRET")
	}
	if *secret == "" {
		fmt.Fprintln(stderr, "parley webhooks verify: --secret (or PARLEY_WEBHOOK_SECRET) is required")
		return exitUsage
	}
	if *tolerance < 0 {
		fmt.Fprintln(stderr, "parley webhooks verify: --tolerance must not be negative")
		return exitUsage
	}
	const maxInput = 64 << 20
	in, err := io.ReadAll(io.LimitReader(stdin, maxInput+1))
	if err != nil {
		fmt.Fprintln(stderr, "parley webhooks verify: reading stdin:", err)
		return exitUsage
	}
	if len(in) > maxInput {
		// Parley's webhook bodies are small: this is not one (and cutting it
		// would only be reported as a signature mismatch).
		fmt.Fprintf(stderr, "parley webhooks verify: stdin is larger than %d MiB\n", maxInput>>20)
		return exitFail
	}
	header, body, err := splitWebhookInput(in, *signature)
	if err != nil {
		// The input is not a signed webhook: invalid (1), like a bad
		// signature, not a usage error.
		fmt.Fprintln(stderr, "invalid:", err)
		return exitFail
	}
	signed, verr := webhook.Verify([]byte(*secret), header, body, *tolerance, time.Now())
	var ev webhook.Event
	_ = json.Unmarshal(body, &ev)
	if *asJSON {
		out := map[string]any{"valid": verr == nil, "event": ev.Event, "id": ev.ID}
		if !signed.IsZero() {
			out["signed_at"] = signed.UTC().Format(time.RFC3339)
		}
		if verr != nil {
			out["error"] = verr.Error()
		}
		b, _ := json.Marshal(out)
		fmt.Fprintln(stdout, string(b))
	}
	if verr != nil {
		if !*asJSON {
			fmt.Fprintln(stderr, "invalid:", verr)
		}
		if errors.Is(verr, webhook.ErrMismatch) && bytes.HasSuffix(body, []byte("\n")) {
			fmt.Fprintln(stderr, "hint: the body ends with a newline; Parley's bodies do not (was it added by echo or an editor?)")
		}
		return exitFail
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "valid: %s %s, signed at %s\n", ev.Event, ev.ID, signed.UTC().Format(time.RFC3339))
	}
	return exitOK
}

// splitWebhookInput finds the signature and the raw body in what verify
// read: a whole HTTP request, a "Parley-Signature:" line and the body, or
// the body alone when sig is given.
func splitWebhookInput(in []byte, sig string) (header string, body []byte, err error) {
	if sig != "" {
		return sig, in, nil
	}
	if first, _, _ := bytes.Cut(in, []byte("\n")); looksLikeRequestLine(first) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return "", nil, fmt.Errorf("stdin looks like an HTTP request but does not parse: %v", err)
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return "", nil, fmt.Errorf("reading the request body: %v", err)
		}
		h := req.Header.Get(webhook.SignatureHeader)
		if h == "" {
			return "", nil, fmt.Errorf("the request has no %s header", webhook.SignatureHeader)
		}
		return h, body, nil
	}
	first, rest, ok := bytes.Cut(in, []byte("\n"))
	name, value, isHeader := strings.Cut(strings.TrimRight(string(first), "\r"), ":")
	if ok && isHeader && strings.EqualFold(strings.TrimSpace(name), webhook.SignatureHeader) {
		return strings.TrimSpace(value), rest, nil
	}
	return "", nil, errors.New("no signature: pipe a whole HTTP request, start stdin with a 'Parley-Signature: ...' line, or pass --signature")
}

// looksLikeRequestLine: "METHOD /target HTTP/1.x".
func looksLikeRequestLine(line []byte) bool {
	f := strings.Fields(strings.TrimRight(string(line), "\r"))
	return len(f) == 3 && strings.HasPrefix(f[2], "HTTP/1.") && f[0] == strings.ToUpper(f[0]) && f[0] != ""
}
