package corpus

import "syscall"

// dieWithParent makes a started service die with the runner (SIGKILL when
// the runner's thread ends), so no service outlives a killed run.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
