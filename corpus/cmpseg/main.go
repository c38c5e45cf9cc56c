// Command cmpseg tells whether two ELF files load the same bytes, with the
// proof hotpatch stock uses (stock.Compare): typically an installed,
// stripped binary of a Debian package and a rebuild of its source package.
//
//	go run ./corpus/cmpseg INSTALLED REBUILT
//
// It prints one line and exits 0 when the rebuild is proven to load the
// installed file's bytes, 1 when they differ, 2 on error.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hotpatch/hotpatch/stock"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: cmpseg INSTALLED REBUILT")
		os.Exit(2)
	}
	proof, err := stock.Compare(os.Args[1], os.Args[2])
	var nr *stock.NotReproducibleError
	switch {
	case errors.As(err, &nr):
		fmt.Println(err)
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "cmpseg:", err)
		os.Exit(2)
	}
	fmt.Printf("identical: %d loaded segments, %d bytes (allowed to differ: %s)\n", proof.Segments, proof.Bytes, strings.Join(proof.Ignored, "; "))
}
