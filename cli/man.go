package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// WriteInstallFiles writes what a package installs besides the binaries
// and units, generated from the command trees: a man page per program
// (man1/hotpatch.1, man8/hotpatchd.8, man8/hotpatch-server.8) and shell
// completions (bash, zsh and fish) for each, under dir.
func WriteInstallFiles(dir string) error {
	roots := []struct {
		cmd     *cobra.Command
		section string
	}{
		{NewRoot(io.Discard, io.Discard), "1"},
		{NewAgentRoot(io.Discard, io.Discard), "8"},
		{NewServerRoot(io.Discard, io.Discard), "8"},
	}
	for _, r := range roots {
		name := r.cmd.Name()
		files := map[string]func(io.Writer) error{
			filepath.Join("man", "man"+r.section, name+"."+r.section): func(w io.Writer) error { return writeMan(w, r.cmd, r.section) },
			filepath.Join("completion", "bash", name):                 func(w io.Writer) error { return r.cmd.GenBashCompletionV2(w, true) },
			filepath.Join("completion", "zsh", "_"+name):              r.cmd.GenZshCompletion,
			filepath.Join("completion", "fish", name+".fish"):         func(w io.Writer) error { return r.cmd.GenFishCompletion(w, true) },
		}
		for path, gen := range files {
			if err := writeFile(filepath.Join(dir, path), gen); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeFile(path string, gen func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := gen(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// writeMan writes the man page of a program: its own description and
// flags, then every subcommand with its own.
func writeMan(w io.Writer, root *cobra.Command, section string) error {
	var b strings.Builder
	name := root.Name()
	fmt.Fprintf(&b, ".TH %s %s \"\" \"hotpatch\" \"hotpatch manual\"\n", strings.ToUpper(roff(name)), section)
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", roff(name), roff(root.Short))
	b.WriteString(".SH SYNOPSIS\n")
	var cmds []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Runnable() {
			cmds = append(cmds, c)
			fmt.Fprintf(&b, ".B %s\n.br\n", roff(c.UseLine()))
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", paragraphs(orShort(root)))
	if fl := root.NonInheritedFlags(); fl.HasAvailableFlags() {
		b.WriteString(".SH OPTIONS\n")
		writeFlags(&b, fl)
	}
	if len(cmds) > 1 || (len(cmds) == 1 && cmds[0] != root) {
		b.WriteString(".SH COMMANDS\n")
		for _, c := range cmds {
			if c == root {
				continue
			}
			fmt.Fprintf(&b, ".SS %s\n%s\n", roff(c.CommandPath()), paragraphs(orShort(c)))
			fmt.Fprintf(&b, ".PP\n.B %s\n", roff(c.UseLine()))
			if fl := c.NonInheritedFlags(); fl.HasAvailableFlags() {
				b.WriteString(".PP\n")
				writeFlags(&b, fl)
			}
		}
	}
	b.WriteString(".SH SEE ALSO\n")
	var see []string
	for _, p := range []string{"hotpatch(1)", "hotpatchd(8)", "hotpatch-server(8)"} {
		if !strings.HasPrefix(p, name+"(") {
			see = append(see, ".BR "+strings.Replace(p, "(", " (", 1))
		}
	}
	b.WriteString(strings.Join(see, " ,\n") + "\n")
	b.WriteString(".PP\nThe full documentation: https://github.com/hotpatch/hotpatch/tree/main/docs\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func orShort(c *cobra.Command) string {
	if c.Long != "" {
		return c.Long
	}
	return c.Short
}

func writeFlags(b *strings.Builder, fl *pflag.FlagSet) {
	fl.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name := "\\-\\-" + roff(f.Name)
		if f.Shorthand != "" {
			name = "\\-" + f.Shorthand + ", " + name
		}
		if v := f.Value.Type(); v != "bool" {
			name += " " + strings.ToUpper(v)
		}
		usage := f.Usage
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && f.DefValue != "0" {
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(b, ".TP\n.B %s\n%s\n", name, roff(usage))
	})
}

// paragraphs turns a help text into roff: blank lines separate
// paragraphs, indented lines are kept as they are.
func paragraphs(s string) string {
	var out []string
	for _, p := range strings.Split(strings.TrimSpace(s), "\n\n") {
		lines := strings.Split(p, "\n")
		indented := false
		for _, l := range lines {
			if strings.HasPrefix(l, " ") {
				indented = true
			}
		}
		if indented {
			out = append(out, ".PP\n.nf\n"+roff(p)+"\n.fi")
		} else {
			out = append(out, ".PP\n"+roff(strings.Join(lines, " ")))
		}
	}
	return strings.Join(out, "\n")
}

// roff escapes text for troff: backslashes, leading dots and quotes,
// hyphens (which troff would otherwise render as typographic hyphens) and
// characters outside ASCII.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var u strings.Builder
	for _, r := range s {
		if r > 127 {
			fmt.Fprintf(&u, `\[u%04X]`, r) // groff reads ASCII; name the others
		} else {
			u.WriteRune(r)
		}
	}
	s = u.String()
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
