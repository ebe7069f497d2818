package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Perm is a set of room permissions, as granted by a token's "rooms" claim.
type Perm uint8

// The room permissions of PROTOCOL.md section 4.
const (
	// PermRead allows joining a room and seeing its state.
	PermRead Perm = 1 << iota
	// PermPresence allows updating one's own presence in a room.
	PermPresence
	// PermWrite allows updating a room's storage and broadcasting in it.
	PermWrite

	// PermAll is every permission; room members have it.
	PermAll = PermRead | PermPresence | PermWrite
)

// permNames lists the wire name of each permission bit, in canonical order.
var permNames = [...]struct {
	p    Perm
	name string
}{
	{PermRead, "read"},
	{PermPresence, "presence"},
	{PermWrite, "write"},
}

// Has reports whether p includes every permission in q.
func (p Perm) Has(q Perm) bool { return p&q == q }

// Strings returns the wire names of the permissions in p in canonical order
// (read, presence, write). It never returns nil, so that an empty set encodes
// as a JSON array. Bits outside PermAll are ignored.
func (p Perm) Strings() []string {
	out := make([]string, 0, len(permNames))
	for _, pn := range permNames {
		if p.Has(pn.p) {
			out = append(out, pn.name)
		}
	}
	return out
}

// String returns the permissions as a comma-separated list, or "none".
func (p Perm) String() string {
	if p&PermAll == 0 {
		return "none"
	}
	return strings.Join(p.Strings(), ",")
}

// ParsePerms converts wire names ("read", "presence", "write") to a Perm.
// Names are case-sensitive; duplicates are allowed; an unknown name is an
// error. An empty list yields an empty Perm.
func ParsePerms(list []string) (Perm, error) {
	var p Perm
	for _, name := range list {
		q, ok := permByName(name)
		if !ok {
			return 0, fmt.Errorf("unknown permission %q (want read, presence or write)", name)
		}
		p |= q
	}
	return p, nil
}

func permByName(name string) (Perm, bool) {
	for _, pn := range permNames {
		if pn.name == name {
			return pn.p, true
		}
	}
	return 0, false
}

// ParseRoomGrant parses the command-line form of one grant,
// "pattern=read,presence,write", as used by `parley token --room`. Spaces
// around permission names are ignored. The pattern must be valid (see
// [ParseRooms]) and at least one permission must be named.
func ParseRoomGrant(s string) (pattern string, p Perm, err error) {
	i := strings.LastIndexByte(s, '=')
	if i < 0 {
		return "", 0, fmt.Errorf("room grant %q: want pattern=perm[,perm...]", s)
	}
	pattern, list := s[:i], s[i+1:]
	if err := validatePattern(pattern); err != nil {
		return "", 0, fmt.Errorf("room grant %q: %w", s, err)
	}
	names := strings.Split(list, ",")
	for j := range names {
		names[j] = strings.TrimSpace(names[j])
	}
	if len(names) == 1 && names[0] == "" {
		return "", 0, fmt.Errorf("room grant %q: no permissions given", s)
	}
	p, err = ParsePerms(names)
	if err != nil {
		return "", 0, fmt.Errorf("room grant %q: %w", s, err)
	}
	return pattern, p, nil
}

// ParseRooms converts the wire form of the "rooms" claim (pattern → list of
// permission names) to patterns and Perms. A pattern is a room id (1–128
// characters of [A-Za-z0-9._:-]), optionally followed by "*", or "*" alone;
// a pattern that could never match a valid room id is an error rather than a
// grant silently ignored, and so is an unknown permission name. A nil or
// empty map yields nil.
func ParseRooms(m map[string][]string) (map[string]Perm, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]Perm, len(m))
	for pattern, names := range m {
		if err := validatePattern(pattern); err != nil {
			return nil, err
		}
		p, err := ParsePerms(names)
		if err != nil {
			return nil, fmt.Errorf("room pattern %q: %w", pattern, err)
		}
		out[pattern] = p
	}
	return out, nil
}

// maxRoomIDLen is the longest room id of PROTOCOL.md section 3.
const maxRoomIDLen = 128

// validatePattern checks one room-id pattern; see [ParseRooms].
func validatePattern(pattern string) error {
	id := strings.TrimSuffix(pattern, "*")
	wild := len(id) != len(pattern)
	switch {
	case pattern == "":
		return errors.New("empty room pattern")
	case wild && id == "":
		return nil // "*": every room
	case len(id) > maxRoomIDLen:
		return fmt.Errorf("room pattern longer than %d characters", maxRoomIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !roomIDByte(id[i]) {
			r, _ := utf8.DecodeRuneInString(id[i:])
			return fmt.Errorf("room pattern %q: character %q not allowed (want [A-Za-z0-9._:-], optionally ending in *)", pattern, r)
		}
	}
	return nil
}

func roomIDByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// patternMatches reports whether pattern grants access to roomID: exactly, or
// by prefix when it ends with "*".
func patternMatches(pattern, roomID string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(roomID, prefix)
	}
	return pattern == roomID
}
