package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/patch"
)

func newKeygen() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen -o NAME",
		Short: "Create an ed25519 signing key pair: NAME.key (0600) and NAME.pub",
		Long: `Create an ed25519 key pair for signing patches. NAME.key is the private key
(mode 0600, keep it offline); NAME.pub is what hosts trust (--trust NAME.pub).
Existing files are never overwritten.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{fmt.Errorf("-o NAME is required")}
			}
			pub, err := patch.WriteKeyPair(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s.key and %s.pub (key id %s)\n", out, out, patch.KeyID(pub))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "base name of the key files")
	return cmd
}
