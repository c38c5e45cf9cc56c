package cli

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/patch"
)

func newInspect() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE.hpatch [--json]",
		Short: "Verify a patch file's signature and show what it changes",
		Long: `Verify that a patch file is well formed and signed by the key it names, then
show its target (file name, build-id, arch), every function with its old and
new size and the SHA-256 of its original bytes, new data, relocations, id,
CVEs, description and signer key id; whether the builder checked type
layouts (with DWARF), whether the patch changes only start-up code (then a
process needs a restart to be protected), and the new exported functions it
carries hidden. A file that fails verification is reported as an error,
never shown.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := patch.LoadFile(args[0])
			if err != nil {
				return err
			}
			s := p.Summary()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			return s.WriteText(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}
