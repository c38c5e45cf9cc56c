// Package cli holds the three command trees: hotpatch (keygen, build,
// inspect, apply, revert, status, events, fleet …), hotpatchd and
// hotpatch-server. Each command is a thin layer over the packages that do
// the work (patch, builder, engine, agent, client, server); cmd/ only calls
// into here. A file holds one command or one family of commands (apply.go:
// apply, revert and status; fleet.go: the fleet subcommands).
//
// The command-line contract (docs/cli.md, generated from this tree and
// checked by a drift test): errors are one line on stderr that names the
// cause; the exit status is non-zero on any failure, 2 for usage errors.
package cli
