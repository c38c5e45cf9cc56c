//go:build !linux

package corpus

import "syscall"

// dieWithParent has no equivalent here; the corpus runs on Linux only.
func dieWithParent() *syscall.SysProcAttr { return nil }
