package stock

import (
	"fmt"
	"path/filepath"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/patch"
)

// Patch builds the patch from the proven original to fixed (a file that
// Fixed returned) and makes it a patch for the installed file: its name and
// build-id. That is sound because Compare proved the two load the same
// bytes; the engine checks the bytes of every replaced function in the
// running process again before it writes anything.
func (p *Prepared) Patch(fixed string, opts builder.Options) (*patch.Patch, error) {
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
