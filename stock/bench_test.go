package stock

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hotpatch/hotpatch/builder"
)

// BenchmarkCompare measures the proof alone on a real pair: Debian's
// mosquitto and its cached rebuild (make stock-demo makes both).
func BenchmarkCompare(b *testing.B) {
	cache, err := os.UserCacheDir()
	if err != nil {
		b.Skip(err)
	}
	rebuilt, _ := filepath.Glob(filepath.Join(cache, "hotpatch", "stock", "mosquitto_*", "original-*", "src", "obj-x86_64-linux-gnu", "src", "mosquitto"))
	if len(rebuilt) == 0 {
		b.Skip("no cached rebuild of mosquitto: run make stock-demo first")
	}
	for i := 0; i < b.N; i++ {
		if _, err := Compare(mosquittoBin, rebuilt[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProveUnits measures the per-function proof of a whole program:
// Debian's lighttpd (not byte-identical) against its cached rebuild, every
// function located and compared (make stock-demo makes both).
func BenchmarkProveUnits(b *testing.B) {
	cache, err := os.UserCacheDir()
	if err != nil {
		b.Skip(err)
	}
	rebuilt, _ := filepath.Glob(filepath.Join(cache, "hotpatch", "stock", "lighttpd_1.4.69-1", "original-*", "src", "src", "lighttpd"))
	if len(rebuilt) == 0 {
		b.Skip("no cached rebuild of lighttpd: run make stock-demo first")
	}
	for i := 0; i < b.N; i++ {
		units, err := builder.ProveUnits(rebuilt[0], lighttpdBin, builder.RetargetOptions{CodeAlone: true})
		if err != nil || len(units) == 0 {
			b.Fatal(units, err)
		}
	}
}
