// Command gendoc prints the command-line reference (docs/cli.md) from the
// hotpatch command trees, or with -openapi the server's OpenAPI document
// (docs/openapi.json). `make docs` runs both; tests fail when a committed
// file is stale. With -install DIR it writes the man pages and shell
// completions that `make install` and the packages install.
package main

import (
	"flag"
	"os"

	"github.com/hotpatch/hotpatch/cli"
	"github.com/hotpatch/hotpatch/server"
)

func main() {
	openapi := flag.Bool("openapi", false, "print the server's OpenAPI document instead")
	install := flag.String("install", "", "write man pages and shell completions under this directory instead")
	flag.Parse()
	if *install != "" {
		if err := cli.WriteInstallFiles(*install); err != nil {
			os.Stderr.WriteString("gendoc: " + err.Error() + "\n")
			os.Exit(1)
		}
		return
	}
	if *openapi {
		doc, err := server.OpenAPI()
		if err != nil {
			os.Stderr.WriteString("gendoc: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.Write(append(doc, '\n'))
		return
	}
	if err := cli.WriteReference(os.Stdout); err != nil {
		os.Stderr.WriteString("gendoc: " + err.Error() + "\n")
		os.Exit(1)
	}
}
