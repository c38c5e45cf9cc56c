package engine

import (
	"fmt"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestApplyUnderLoad patches and reverts the 5-thread multithreaded
// fixture 20 times while a client keeps sending requests: every request
// must get its answer, in order, with the state carried on (zero failed
// requests, no restart).
func TestApplyUnderLoad(t *testing.T) {
	fx, err := fixture.Load("multithreaded")
	if err != nil {
		t.Fatal(err)
	}
	p, pub, orig := signedPatch(t, fx, fx.DefaultFlags())
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := proc.Pid()

	stop := make(chan struct{})
	done := make(chan error, 1)
	served := make(chan int, 1)
	go func() {
		n := 0
		defer func() { served <- n }()
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			n++
			got, err := proc.Probe("deposit 1")
			if err != nil {
				done <- fmt.Errorf("request %d: %v", n, err)
				return
			}
			if want := fmt.Sprintf("%d balance=%d", n, n); got != want {
				done <- fmt.Errorf("request %d: got %q, want %q", n, got, want)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		if _, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}}); err != nil {
			close(stop)
			t.Fatalf("apply %d: %v", i, err)
		}
		if _, err := Revert(pid, p.ID, 0); err != nil {
			close(stop)
			t.Fatalf("revert %d: %v", i, err)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := <-served; n < 20 {
		t.Errorf("only %d requests were served during 20 apply/revert cycles", n)
	} else {
		t.Logf("%d requests served, none failed, during 20 apply/revert cycles", n)
	}
}
