// Command hotpatch-server is the fleet control plane. See docs/server.md.
package main

import (
	"os"

	"github.com/hotpatch/hotpatch/cli"
)

func main() {
	os.Exit(cli.ServerMain(os.Args[1:], os.Stdout, os.Stderr))
}
