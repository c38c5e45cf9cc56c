//go:build !linux

package agent

import "context"

// watchDir: without inotify the rescan tick reads the patch directory.
func (a *Agent) watchDir(ctx context.Context) <-chan struct{} { return make(chan struct{}) }
