// Command hotpatch builds, inspects and (later) applies live patches.
package main

import (
	"os"

	"github.com/hotpatch/hotpatch/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
