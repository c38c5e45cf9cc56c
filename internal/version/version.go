// Package version holds the version of the hotpatch binaries, set at link
// time by the Makefile (-X .../internal/version.Version=...).
package version

import "runtime/debug"

// Version is the release version; "dev" for builds outside the Makefile.
var Version = "dev"

// String returns the version and, when known, the VCS revision.
func String() string {
	v := Version
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}
