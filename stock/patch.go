package stock

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/patch"
)

// Patch builds the patch from the proven original to fixed (a file that
// Fixed returned) and makes it a patch for the installed file: its name and
// build-id. That is sound because Compare proved the two load the same
// bytes; the engine checks the bytes of every replaced function in the
// running process again before it writes anything.
//
// When the rebuild is not byte-identical (p.Different), the patch is built
// from the rebuild and retargeted to the installed file by a per-function
// proof (builder.Retarget); p.Retargeted then says what was proven.
func (p *Prepared) Patch(fixed string, opts builder.Options) (*patch.Patch, error) {
	if p.Proof == nil && p.Different != nil {
		out, err := builder.Build(p.Original, fixed, opts)
		if err != nil {
			return nil, err
		}
		moved, proof, err := builder.Retarget(out, p.Original, fixed, p.Package.File, p.retargetOptions())
		if err != nil {
			return nil, fmt.Errorf("stock: the rebuild is not the installed file (%s) and the per-function proof failed: %w", p.Different.shortWhy(), err)
		}
		p.Retargeted = proof
		how := "type layouts compared with the installed binary's DWARF"
		if !proof.LayoutsChecked {
			how = "every function of the module proven the same code (no debug information: a type member no code touches is not seen)"
		}
		p.logf("retargeted to the installed file: compile units %s proven (%d functions), %d of %d functions of the module proven, %s; %d references moved, %d in place",
			strings.Join(proof.Units, ", "), proof.Functions, proof.Proven, proof.Total, how, proof.Moved, proof.Same)
		return moved, nil
	}
	if p.Proof == nil || len(p.Proof.InstalledBuildID) == 0 {
		return nil, fmt.Errorf("stock: %s has no build-id; a patch could not name it", p.Package.File)
	}
	out, err := builder.Build(p.Original, fixed, opts)
	if err != nil {
		return nil, err
	}
	out.Target.BuildID = append([]byte(nil), p.Proof.InstalledBuildID...)
	out.Target.Name = filepath.Base(p.Package.File)
	return out, nil
}
