// Package cli implements the hotpatch command line: one file per command,
// each a thin layer over the patch, build (and later engine) packages. It
// keeps the contract of DESIGN.md: errors are one line on stderr that name
// the cause, the exit status is non-zero on any failure (2 for usage errors).
package cli
