// Package auth is Parley's credentials layer (PROTOCOL.md sections 4 and 7):
//
//   - access tokens: [Verifier] checks JWTs (HS256 with a shared secret, or
//     RS256 / EdDSA public keys) before a WebSocket upgrade and on REST
//     calls, and [Signer] mints HS256 tokens for `parley token`,
//     POST /api/tokens and login;
//   - room grants: the "rooms" claim maps room-id patterns ("room-1",
//     "team-*", "*") to [Perm] sets, read by [Claims.RoomPerms];
//   - passwords: argon2id hashes in PHC string format ([HashPassword],
//     [CheckPassword], [DummyCheck]);
//   - opaque refresh tokens, stored only as a SHA-256 hash
//     ([NewRefreshToken], [HashRefreshToken]);
//   - random secrets ([GenerateSecret]) and coturn REST-scheme TURN
//     credentials ([TURNCredentials]).
//
// The package does no I/O beyond reading crypto/rand.
package auth
