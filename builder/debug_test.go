package builder

import "testing"

// TestRefString: HOTPATCH_BUILD_DEBUG explains what a differing field
// refers to in words, not as a Go struct dump.
func TestRefString(t *testing.T) {
	fn := &symbol{name: "memo_set", file: "ledger.c"}
	inner := ref{kind: refObj, sym: &symbol{name: "counter"}}
	for _, tt := range []struct {
		r    ref
		want string
	}{
		{ref{kind: refKeep}, "a link-time constant"},
		{ref{kind: refFunc, sym: fn}, "function ledger.c:memo_set"},
		{ref{kind: refObj, sym: &symbol{name: "balance"}, off: 8}, "data object balance+0x8"},
		{ref{kind: refRO, start: 0x2000, end: 0x2010, off: 4}, "read-only data [0x2000, 0x2010)+0x4"},
		{ref{kind: refExt, name: "snprintf", ver: "GLIBC_2.2.5", indirect: true}, "external symbol snprintf@GLIBC_2.2.5 (through the GOT)"},
		{ref{kind: refIndirect, inner: &inner}, "a GOT slot holding the address of data object counter"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
