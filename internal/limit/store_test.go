package limit

import (
	"strings"
	"testing"
)

// Keys longer than 128 bytes are stored hashed, so a client cannot make the
// counters hold large strings; distinct long keys stay distinct. Issue 4.
func TestKey(t *testing.T) {
	long := strings.Repeat("a", 129)
	for _, tc := range []struct {
		name, key string
		hashed    bool
	}{
		{"empty", "", false},
		{"short", "example.com", false},
		{"128 bytes", strings.Repeat("a", 128), false},
		{"129 bytes", long, true},
		{"10 KB", strings.Repeat("x", 10<<10), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got := SplitKey(Key("id", tc.key))
			if !tc.hashed {
				if got != tc.key {
					t.Errorf("Key(%d bytes) = %q, want the key unchanged", len(tc.key), got)
				}
				return
			}
			if len(got) > MaxKeyLen || !strings.HasPrefix(got, "sha256:") {
				t.Errorf("Key(%d bytes) = %q, want a sha256 of at most %d bytes", len(tc.key), got, MaxKeyLen)
			}
			if Key("id", tc.key) != "id\x00"+got {
				t.Error("boundKey is not deterministic")
			}
		})
	}
	if Key("id", long) == Key("id", long[:128]+"b") {
		t.Error("two long keys that differ hash the same")
	}
}
