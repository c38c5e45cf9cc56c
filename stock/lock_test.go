package stock

import (
	"testing"
	"time"
)

// TestLockDir: a second preparation of the same source version waits for
// the first (it would otherwise remove the tree the first is building).
func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		u, err := lockDir(dir)
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case u := <-got:
		u()
		t.Fatal("the second lock was taken while the first was held")
	case <-time.After(200 * time.Millisecond):
		// Held, as it should be; a later success is checked below.
	}
	unlock()
	select {
	case u := <-got:
		u()
	case <-time.After(10 * time.Second):
		t.Fatal("the second lock was not taken within 10 s of the first's release")
	}
}
