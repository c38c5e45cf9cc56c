// Command hotpatchd is the on-host agent. Until the agent lands it only
// reports its version.
package main

import (
	"fmt"
	"os"

	"github.com/hotpatch/hotpatch/internal/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println("hotpatchd", version.String())
		return
	}
	fmt.Fprintln(os.Stderr, "hotpatchd: the agent is not implemented yet; only --version works")
	os.Exit(2)
}
