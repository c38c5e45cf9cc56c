// Command gendoc prints the command-line reference (docs/cli.md) from the
// hotpatch command tree. `make docs` runs it; a test fails when the
// committed file is stale.
package main

import (
	"os"

	"github.com/hotpatch/hotpatch/cli"
)

func main() {
	if err := cli.WriteReference(os.Stdout); err != nil {
		os.Stderr.WriteString("gendoc: " + err.Error() + "\n")
		os.Exit(1)
	}
}
