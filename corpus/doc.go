// Package corpus measures the builder on real software: real security fixes of
// real C projects, taken from Debian source packages, built before and after
// the fix with the builder's flags, patched into a running service under load
// and reverted.
//
// Each project is a directory holding manifest.json (the Debian source
// package and version, how to build the module, how to drive it, and its
// fixes), the C driver that serves requests by calling the library, and any
// patch extracted from an upstream change. Downloads and builds are cached
// under ~/.cache/hotpatch/corpus, never in the repository.
//
// A fix's orig and fixed builds come from the same source package: orig with
// the package's patch series applied up to the fix, fixed with the fix too.
// A fix already contained in the package's version is measured by applying
// its extracted patch in reverse for orig ("revert": true).
//
// go run ./corpus/run builds everything it needs, runs hotpatch build on
// every pair, checks each outcome against the manifest's expectation (a patch
// that works live, or a refusal), and writes docs/CORPUS.md.
package corpus
