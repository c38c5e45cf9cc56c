// Command hotpatchd is the on-host agent: it keeps the patches of a
// directory applied to every matching process. See docs/agent.md.
package main

import (
	"os"

	"github.com/hotpatch/hotpatch/cli"
)

func main() {
	os.Exit(cli.AgentMain(os.Args[1:], os.Stdout, os.Stderr))
}
