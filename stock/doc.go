// Package stock makes the binaries a distribution ships patchable.
//
// Users run their distribution's packages: built with the distribution's
// flags, stripped, without the kept relocations the builder needs. Debian's
// builds are largely reproducible, so a rebuild of the installed package's
// own source with its own flags, plus -Wl,--emit-relocs, gives a file whose
// loaded bytes are those of the installed one. This package
//
//  1. identifies the installed file's package and source version (dpkg),
//  2. fetches that source package (apt-get source) into a cache, with its
//     build dependencies installed (apt-get build-dep),
//  3. rebuilds it with the package's own debian/rules and the flags of
//     dpkg-buildflags, adding -Wl,--emit-relocs through DEB_LDFLAGS_APPEND,
//  4. proves the rebuild is the installed file (Compare: every loaded
//     segment byte-identical but for the build-id and .dynsym's section
//     numbers), or refuses and names the first differing section,
//  5. rebuilds the source with the fix applied the same way,
//
// so that the builder can diff the two rebuilds and the patch names the
// installed file's build-id. Nothing here depends on -ffunction-sections,
// which stock builds lack: the builder delimits functions by their symbols'
// sizes and the kept relocations.
//
// It sits before the builder in the flow: installed file + fix → stock →
// two proven builds → builder → patch. The agent, the engine and the fleet
// see an ordinary signed patch for the stock build-id.
package stock
