package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/stock"
)

// stockFlags are the flags shared by `hotpatch stock prepare` and
// `hotpatch build --stock`.
type stockFlags struct {
	sourceVersion string
	drops         []string
	cache         string
	symbols       string
	codeAlone     bool
	buildRoot     string
}

func (s *stockFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.sourceVersion, "source-version", "", "fetch this version of the source package instead of the installed one (with --drop-patch, to step back to it)")
	f.StringArrayVar(&s.drops, "drop-patch", nil, "leave this entry of debian/patches/series out (repeatable)")
	f.StringVar(&s.cache, "stock-cache", "", "where sources and rebuilds are kept (default: hotpatch/stock in the user's cache directory)")
	f.StringVar(&s.buildRoot, "build-root", "", "build in this directory's minimal Debian system of the host's release (made with debootstrap on first use) instead of on the host; sources and rebuilds are then kept inside it")
	f.BoolVar(&s.codeAlone, "without-symbols", false, "when the rebuild is not byte-identical and no debug file is at hand: accept a proof that every function of the installed binary is the rebuild's code (type layouts are then known only through the code that uses them)")
	f.StringVar(&s.symbols, "symbols", "", "the installed binary's debug file (its -dbgsym package), used when the rebuild is not byte-identical (default: the one installed under /usr/lib/debug/.build-id, if any)")
}

func (s *stockFlags) options(binary string, log io.Writer) stock.Options {
	return stock.Options{Binary: binary, SourceVersion: s.sourceVersion, DropPatches: s.drops, Cache: s.cache, Symbols: s.symbols, CodeAlone: s.codeAlone, BuildRoot: s.buildRoot, Log: log}
}

func newStock() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stock",
		Short: "Work with the binaries a distribution ships",
	}
	var sf stockFlags
	prepare := &cobra.Command{
		Use:   "prepare BINARY|PACKAGE",
		Short: "Rebuild an installed binary from its source package and prove the rebuild is the installed file",
		Long: `Find the package that installed BINARY (or, given an installed package's
name, the executable or library it is named after), fetch its source package
(apt-get source), rebuild it with the package's own debian/rules and flags plus
-Wl,--emit-relocs, and prove that every loaded segment of the rebuild is
byte-identical to the installed file. The rebuild is cached by source
version; 'hotpatch build --stock BINARY --fix FIX.patch' then builds a patch
for the installed file's build-id. Needs dpkg-dev and, to install missing
build dependencies, root.

When the rebuild is not byte-identical, it says why (the section that grew,
a build date or path) and how many compile units of the installed file are
proven the same code: a fix confined to those can still be patched, by a
per-function proof (docs/stock.md, "When the rebuild is not the installed
file"), with the package's debug symbols (--symbols FILE.debug or
PKG-dbgsym.deb; by default the installed -dbgsym package's file) or, with
--without-symbols, when all of the program's code is proven the same.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := stock.Prepare(cmd.Context(), sf.options(args[0], cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if p.Different != nil {
				syms := "its exported symbols and code alone, which needs --without-symbols when a patch is built (install its -dbgsym package for all symbols and its types, or name a debug file with --symbols)"
				if p.Symbols != "" {
					syms = "the symbols of " + p.Symbols
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s (%s %s, source %s %s) is NOT reproducible: %s\nfallback: patches are retargeted to it by a per-function proof, using %s; the rebuild: %s\n",
					p.Package.File, p.Package.Name, p.Package.Version, p.Package.Source, p.Package.SourceVersion, p.Different.Error(), syms, p.Original)
				fmt.Fprintf(cmd.OutOrStdout(), "%d of %d compile units are proven the same code: a fix confined to them can be patched\n", p.UnitsProven(), len(p.Units))
				for _, u := range p.Units {
					if u.Proven != u.Functions {
						fmt.Fprintf(cmd.OutOrStdout(), "  not %s: %d of %d functions proven; %s\n", u.Unit, u.Proven, u.Functions, u.First)
					}
				}
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s %s, source %s %s, build-id %x) is reproducible: %s\n",
				p.Package.File, p.Package.Name, p.Package.Version, p.Package.Source, p.Package.SourceVersion, p.Proof.InstalledBuildID, p.Original)
			return nil
		},
	}
	sf.add(prepare)
	cmd.AddCommand(prepare)
	return cmd
}

// buildStock is `hotpatch build --stock`: both builds come from the
// installed file's source package, and the patch names the installed
// file's build-id.
func buildStock(ctx context.Context, binary string, fixes []string, sf *stockFlags, opts builder.Options, log io.Writer) (*patch.Patch, *builder.RetargetProof, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	prep, err := stock.Prepare(ctx, sf.options(binary, log))
	if err != nil {
		return nil, nil, err
	}
	fixed, err := prep.Fixed(ctx, fixes)
	if err != nil {
		return nil, nil, err
	}
	p, err := prep.Patch(fixed, opts)
	var sn *builder.SymbolsNeededError
	if errors.As(err, &sn) {
		return nil, nil, fmt.Errorf("%w; name the debug file or -dbgsym .deb with --symbols, or choose the proof by code alone with --without-symbols", err)
	}
	if err != nil {
		return nil, nil, err
	}
	return p, prep.Retargeted, nil
}
