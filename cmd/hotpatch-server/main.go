// Command hotpatch-server is the control plane. Until the server lands it
// only reports its version.
package main

import (
	"fmt"
	"os"

	"github.com/hotpatch/hotpatch/internal/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println("hotpatch-server", version.String())
		return
	}
	fmt.Fprintln(os.Stderr, "hotpatch-server: the server is not implemented yet; only --version works")
	os.Exit(2)
}
