//go:build linux

package agent

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// watchDir reports changes to the patch directory (inotify); the rescan
// tick reads it too, in case inotify is not available. The inotify fd is
// non-blocking and wrapped in an *os.File, so that the runtime's poller
// waits for it: closing the file when ctx is done wakes the reader, which
// then ends (closing a blocking fd under a read would wake nothing, and
// the fd number could be reused and read by the stuck goroutine).
func (a *Agent) watchDir(ctx context.Context) <-chan struct{} {
	c := make(chan struct{}, 1)
	if a.cfg.PatchDir == "" {
		return c // enrolled without a local directory
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return c
	}
	if _, err := unix.InotifyAddWatch(fd, a.cfg.PatchDir, unix.IN_CREATE|unix.IN_DELETE|unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_MOVED_FROM); err != nil {
		unix.Close(fd)
		return c
	}
	f := os.NewFile(uintptr(fd), "inotify "+a.cfg.PatchDir)
	go func() {
		<-ctx.Done()
		f.Close() // wakes the read below with os.ErrClosed
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			// Let a burst of changes (a copy in progress) settle.
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}()
	return c
}
