// Package builder turns an ordinary before/after pair of builds of the same
// module into a patch: the changed and new functions, the new read-only data
// they use, and relocations that bind every other reference to the objects of
// the original module, so a live process keeps its state.
//
// # Contract for input builds
//
// Both builds come from the same compiler with the same flags plus
// -ffunction-sections -fdata-sections -Wl,--emit-relocs (and a build-id,
// which gcc on Linux links by default). Executables (PIE or not) and shared
// libraries are accepted, at any -O level, with or without -g.
//
// # How it works
//
// With --emit-relocs the linker keeps a relocation for every place in the
// final file that refers to another input section. Because every function and
// every data object has a section of its own, every reference from a function
// to anything outside itself is covered by a relocation. The builder:
//
//  1. reads both files (symbols grouped by source file, emitted and dynamic
//     relocations, sections) and decodes the instructions that carry
//     relocations, to learn the exact address each one refers to;
//  2. pairs the functions and objects of both builds by name (statics by
//     source file and name, or by name alone when the file was renamed and
//     that is unambiguous; gcc clones like foo.constprop.0 even if their
//     number changed), and unnamed data by section and contents modulo
//     relocations;
//  3. compares each pair modulo relocations: same bytes outside relocated
//     fields, and every relocated field refers to an equivalent place (the
//     paired function at the same offset, the same global, read-only data with
//     the same contents, the same external symbol). A function that jumps into
//     the middle of a changed function, or the parent of a changed .cold
//     part, is changed too; a function that differs only in a __LINE__ or a
//     build stamp is left out (and reported) unless asked for;
//  4. refuses what cannot be patched live: a changed initial value, size or
//     section of an existing global or static, a changed thread-local layout,
//     a static that cannot be paired unambiguously, C++ exception handling in
//     changed code, a fix that changes no function; and, once the patch is
//     laid out (review.go), a changed layout of a type whose objects may
//     exist (DWARF), a patch that could never apply (main, a thread's top
//     function that never returns, an entry too short for the redirect) or
//     that redirects nothing, a fix that runs only at start-up, and a new
//     exported symbol (the last two unless Options allow them);
//  5. copies the code of changed and new functions, the read-only data they
//     use that the original lacks (string literals, jump tables, changed const
//     tables) and new writable data, and records each reference as a
//     relocation to the patch itself, to a link-time address of the original
//     module, or to an external symbol resolved at apply time.
//
// The result is an unsigned *patch.Patch; the caller signs it with patch.Sign.
package builder
