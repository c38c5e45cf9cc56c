// Command cmpseg tells whether two ELF files load the same bytes (see
// package segcmp): typically an installed, stripped binary of a Debian
// package and a rebuild of its source package.
//
//	go run ./corpus/cmpseg INSTALLED REBUILT
//
// It prints one line and exits 0 when every loaded segment is identical
// (the build-id aside), 1 when they differ, 2 on error.
package main

import (
	"fmt"
	"os"

	"github.com/hotpatch/hotpatch/corpus/segcmp"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: cmpseg INSTALLED REBUILT")
		os.Exit(2)
	}
	r, err := segcmp.Compare(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "cmpseg:", err)
		os.Exit(2)
	}
	fmt.Println(r)
	if !r.Identical {
		os.Exit(1)
	}
}
