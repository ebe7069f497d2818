package auth

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestPermHas(t *testing.T) {
	tests := []struct {
		p, q Perm
		want bool
	}{
		{PermAll, PermWrite, true},
		{PermAll, PermRead | PermPresence, true},
		{PermRead, PermRead, true},
		{PermRead, PermWrite, false},
		{PermRead | PermPresence, PermRead | PermWrite, false},
		{0, PermRead, false},
		{PermRead, 0, true},
	}
	for _, tt := range tests {
		if got := tt.p.Has(tt.q); got != tt.want {
			t.Errorf("%v.Has(%v) = %v, want %v", tt.p, tt.q, got, tt.want)
		}
	}
}

func TestPermStrings(t *testing.T) {
	tests := []struct {
		p    Perm
		want []string
		str  string
	}{
		{0, []string{}, "none"},
		{PermRead, []string{"read"}, "read"},
		{PermWrite | PermRead, []string{"read", "write"}, "read,write"},
		{PermAll, []string{"read", "presence", "write"}, "read,presence,write"},
		{PermAll | 0x80, []string{"read", "presence", "write"}, "read,presence,write"},
	}
	for _, tt := range tests {
		got := tt.p.Strings()
		if got == nil || !slices.Equal(got, tt.want) {
			t.Errorf("Perm(%#x).Strings() = %#v, want %#v", uint8(tt.p), got, tt.want)
		}
		if s := tt.p.String(); s != tt.str {
			t.Errorf("Perm(%#x).String() = %q, want %q", uint8(tt.p), s, tt.str)
		}
		// Strings and ParsePerms are inverses on PermAll's bits.
		if back, err := ParsePerms(got); err != nil || back != tt.p&PermAll {
			t.Errorf("ParsePerms(%v) = %v, %v; want %v", got, back, err, tt.p&PermAll)
		}
	}
}

func TestParsePerms(t *testing.T) {
	tests := []struct {
		in      []string
		want    Perm
		wantErr bool
	}{
		{nil, 0, false},
		{[]string{"read"}, PermRead, false},
		{[]string{"write", "read"}, PermRead | PermWrite, false},
		{[]string{"read", "presence", "write"}, PermAll, false},
		{[]string{"read", "read"}, PermRead, false},
		{[]string{"admin"}, 0, true},
		{[]string{"read", "Write"}, 0, true},
		{[]string{""}, 0, true},
		{[]string{" read"}, 0, true},
	}
	for _, tt := range tests {
		got, err := ParsePerms(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParsePerms(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseRoomGrant(t *testing.T) {
	tests := []struct {
		in      string
		pattern string
		perm    Perm
		errHas  string // empty: must succeed
	}{
		{"lobby=read", "lobby", PermRead, ""},
		{"team-*=read,presence,write", "team-*", PermAll, ""},
		{"*=read", "*", PermRead, ""},
		{"a.b_c:d-E9=write, read", "a.b_c:d-E9", PermRead | PermWrite, ""},
		{"lobby=read,read", "lobby", PermRead, ""},
		{"lobby", "", 0, "want pattern=perm"},
		{"", "", 0, "want pattern=perm"},
		{"=read", "", 0, "empty room pattern"},
		{"lobby=", "", 0, "no permissions"},
		{"lobby=read,", "", 0, "unknown permission"},
		{"lobby=admin", "", 0, `unknown permission "admin"`},
		{"lob by=read", "", 0, "not allowed"},
		{"a=b=read", "", 0, "not allowed"},
		{"*lobby=read", "", 0, "not allowed"},
		{"lo*by=read", "", 0, "not allowed"},
		{strings.Repeat("r", 129) + "=read", "", 0, "longer than 128"},
		{strings.Repeat("r", 128) + "*=read", strings.Repeat("r", 128) + "*", PermRead, ""},
	}
	for _, tt := range tests {
		pattern, p, err := ParseRoomGrant(tt.in)
		if tt.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("ParseRoomGrant(%q) error = %v, want one saying %q", tt.in, err, tt.errHas)
			}
			continue
		}
		if err != nil || pattern != tt.pattern || p != tt.perm {
			t.Errorf("ParseRoomGrant(%q) = %q, %v, %v; want %q, %v", tt.in, pattern, p, err, tt.pattern, tt.perm)
		}
	}
}

func TestParseRooms(t *testing.T) {
	got, err := ParseRooms(map[string][]string{"lobby": {"read"}, "team-*": {"read", "write"}, "*": {}})
	want := map[string]Perm{"lobby": PermRead, "team-*": PermRead | PermWrite, "*": 0}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("ParseRooms = %v, %v; want %v", got, err, want)
	}
	if got, err := ParseRooms(nil); got != nil || err != nil {
		t.Errorf("ParseRooms(nil) = %v, %v; want nil, nil", got, err)
	}
	for _, bad := range []map[string][]string{
		{"lobby": {"own"}},
		{"": {"read"}},
		{"lobby/1": {"read"}},
	} {
		if got, err := ParseRooms(bad); err == nil {
			t.Errorf("ParseRooms(%v) = %v, want error", bad, got)
		}
	}
}

func TestRoomPerms(t *testing.T) {
	rooms := map[string]Perm{
		"lobby":     PermRead,
		"team-*":    PermRead | PermPresence,
		"team-a":    PermWrite,
		"doc:42":    PermAll,
		"private-*": 0,
	}
	tests := []struct {
		name  string
		rooms map[string]Perm
		room  string
		want  Perm
	}{
		{"exact", rooms, "lobby", PermRead},
		{"exact is not prefix", rooms, "lobby2", 0},
		{"exact is case-sensitive", rooms, "Lobby", 0},
		{"prefix", rooms, "team-b", PermRead | PermPresence},
		{"prefix matches the bare prefix", rooms, "team-", PermRead | PermPresence},
		{"prefix does not match shorter", rooms, "team", 0},
		{"prefix matches only at the start", rooms, "my-team-b", 0},
		{"union of exact and prefix", rooms, "team-a", PermAll},
		{"colon in id", rooms, "doc:42", PermAll},
		{"empty grant", rooms, "private-x", 0},
		{"no match", rooms, "other", 0},
		{"star matches all", map[string]Perm{"*": PermRead}, "anything.at:all", PermRead},
		{"star union", map[string]Perm{"*": PermRead, "x*": PermWrite, "xy": PermPresence}, "xy", PermAll},
		{"nil rooms", nil, "lobby", 0},
		{"unknown bits masked", map[string]Perm{"lobby": 0xF0 | PermRead}, "lobby", PermRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Claims{UserID: "u1", Rooms: tt.rooms}
			if got := c.RoomPerms(tt.room); got != tt.want {
				t.Errorf("RoomPerms(%q) = %v, want %v", tt.room, got, tt.want)
			}
		})
	}
}
