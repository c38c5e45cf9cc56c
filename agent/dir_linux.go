//go:build linux

package agent

import (
	"context"
	"time"

	"golang.org/x/sys/unix"
)

// watchDir reports changes to the patch directory (inotify); the rescan
// tick reads it too, in case inotify is not available.
func (a *Agent) watchDir(ctx context.Context) <-chan struct{} {
	c := make(chan struct{}, 1)
	if a.cfg.PatchDir == "" {
		return c // enrolled without a local directory
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return c
	}
	if _, err := unix.InotifyAddWatch(fd, a.cfg.PatchDir, unix.IN_CREATE|unix.IN_DELETE|unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_MOVED_FROM); err != nil {
		unix.Close(fd)
		return c
	}
	go func() {
		<-ctx.Done()
		unix.Close(fd) // ends the read below
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil && err != unix.EINTR || n == 0 && err == nil {
				return
			}
			// Let a burst of changes (a copy in progress) settle.
			time.Sleep(20 * time.Millisecond)
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}()
	return c
}
