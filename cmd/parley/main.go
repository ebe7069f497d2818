// Command parley is the Parley server: real-time rooms, chat and calls in
// one binary.
//
//	parley serve [--dev] [flags]   run the server
//	parley token --user ID ...     print a signed access token
//	parley rooms list|connections|broadcast ...   the server API: live rooms
//	parley users disconnect USER   the server API: close a user's connections (4003)
//	parley webhooks verify ...     check a webhook's signature
//	parley bench SCENARIO ...      load-test a running server
//	parley version                 print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: parley <command> [flags]

commands:
  serve     run the server (add --dev for a zero-setup development server)
  token     print a signed access token: parley token --user ID [--name N] [--ttl 1h] [--room 'pattern=read,presence,write']...
  rooms     the live rooms of a running server: parley rooms list | connections ROOM | broadcast ROOM JSON
  users     parley users disconnect USER [--reason R]: close every connection of a user (4003)
  webhooks  parley webhooks verify --secret S < request: check a webhook's Parley-Signature
  bench     load-test a running server: parley bench -h

rooms and users speak the server API: --url (PARLEY_URL, default http://127.0.0.1:7880),
--api-key (PARLEY_API_KEY), --json for scripts.
  version   print the version

Run 'parley <command> -h' for the flags of a command.
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "token":
		return token(args[1:], stdout, stderr)
	case "bench":
		return bench(args[1:], stdout, stderr)
	case "rooms":
		return roomsCmd(args[1:], stdout, stderr)
	case "users":
		return usersCmd(args[1:], stdout, stderr)
	case "webhooks":
		return webhooksCmd(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "parley", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "parley: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(args []string, stdout, stderr io.Writer) int {
	fs := config.FlagSet("parley serve")
	fs.SetOutput(helpOutput(args, stdout, stderr))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg, err := config.Load(fs, os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, "parley:", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	warnSecretFlags(fs, log)

	var devToken string
	if cfg.AuthSecret == "" && cfg.Dev {
		cfg.AuthSecret = auth.GenerateSecret()
		signer := auth.NewHS256Signer([]byte(cfg.AuthSecret))
		devToken, _, err = signer.Mint("dev-user", "Dev User", 24*time.Hour, map[string]auth.Perm{"*": auth.PermAll})
		if err != nil {
			fmt.Fprintln(stderr, "parley:", err)
			return 1
		}
	}
	if cfg.AuthSecret == "" && cfg.AuthRSAPublicKey == "" && cfg.AuthEdPublicKey == "" {
		fmt.Fprintln(stderr, "parley: invalid config: auth-secret: required; set PARLEY_AUTH_SECRET (or --auth-secret), or run 'parley serve --dev' for a development server")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "parley:", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		fmt.Fprintln(stderr, "parley: listen:", err)
		_ = srv.Shutdown(context.Background())
		return 1
	}
	srv.Start(ln)
	addr := ln.Addr().String()
	log.Info("listening", "addr", addr, "store", cfg.StoreDriver, "broker", cfg.Broker, "dev", cfg.Dev, "version", version)
	if devToken != "" {
		fmt.Fprintf(stdout, "Development mode: rooms are open; do not use in production.\n")
		fmt.Fprintf(stdout, "  auth secret: %s\n", cfg.AuthSecret)
		fmt.Fprintf(stdout, "  sample token (user dev-user, 24h): %s\n", devToken)
		fmt.Fprintf(stdout, "  connect: ws://%s/ws?token=%s\n", addr, devToken)
		if cfg.Demo && cfg.WebDir == "" {
			fmt.Fprintf(stdout, "  demo app: http://%s/\n", addr)
		}
	}

	code := 0
	select {
	case <-ctx.Done():
	case <-srv.Stopping():
		// Another process serves this node id now (docs/cluster.md).
		log.Error("another process took over this node id: shutting down")
		code = 1
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown incomplete", "err", err)
		return 1
	}
	log.Info("stopped")
	return code
}

// warnSecretFlags logs one warning per secret setting given as a flag: its
// value shows in ps, /proc/PID/cmdline and /debug/pprof/cmdline.
func warnSecretFlags(fs *flag.FlagSet, log *slog.Logger) {
	for _, sf := range config.SecretFlagsSet(fs) {
		log.Warn("secret passed as a flag is visible to local users and in /debug/pprof/cmdline; set it in the environment or in a file instead",
			"flag", "--"+sf.Flag, "env", sf.Env, "file_env", sf.Env+"_FILE")
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func token(args []string, stdout, stderr io.Writer) int {
	// Only its own flags and the two settings it reads (not every server
	// setting): the secret, and the config file it may come from.
	fs := config.FlagSetOf("parley token", "auth-secret", "config")
	fs.SetOutput(helpOutput(args, stdout, stderr))
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: parley token --user ID [--name N] [--ttl 1h] [--room 'pattern=read,presence,write']...\n\n"+
			"Prints an HS256 access token signed with the auth secret (PARLEY_AUTH_SECRET, PARLEY_AUTH_SECRET_FILE or --auth-secret).\n\nflags:\n")
		fs.PrintDefaults()
	}
	user := fs.String("user", "", "user id (the token's sub), required")
	name := fs.String("name", "", "display name")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	var rooms multiFlag
	fs.Var(&rooms, "room", "room grant 'pattern=read,presence,write' (repeatable; pattern may end with *)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg, err := config.Load(fs, os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, "parley:", err)
		return 2
	}
	if *user == "" {
		fmt.Fprintln(stderr, "parley token: --user is required")
		return 2
	}
	if cfg.AuthSecret == "" {
		fmt.Fprintln(stderr, "parley token: no secret: set PARLEY_AUTH_SECRET or --auth-secret")
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintln(stderr, "parley token: --ttl must be positive")
		return 2
	}
	grants := map[string]auth.Perm{}
	for _, r := range rooms {
		pattern, p, err := auth.ParseRoomGrant(r)
		if err != nil {
			fmt.Fprintf(stderr, "parley token: --room %q: %v\n", r, err)
			return 2
		}
		grants[pattern] |= p
	}
	tok, _, err := auth.NewHS256Signer([]byte(cfg.AuthSecret)).Mint(*user, *name, *ttl, grants)
	if err != nil {
		fmt.Fprintln(stderr, "parley token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// helpOutput is where a flag set prints: stdout when help was asked for
// (-h, -help, --help: the answer is the output), stderr otherwise (usage
// after a mistake).
func helpOutput(args []string, stdout, stderr io.Writer) io.Writer {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			return stdout
		}
	}
	return stderr
}
