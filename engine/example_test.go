package engine_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/patch"
)

// Apply a signed patch to a running process, trusting one publisher key,
// and tell a busy function from other failures.
func ExampleApply() {
	p, err := patch.LoadFile("ledger-memo.hpatch")
	if err != nil {
		log.Fatal(err)
	}
	pub, err := patch.ReadPublicKey("release.pub")
	if err != nil {
		log.Fatal(err)
	}
	pid := 4242
	res, err := engine.Apply(pid, p, engine.Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second})
	var busy *engine.BusyError
	switch {
	case errors.As(err, &busy):
		log.Fatalf("%s is running in thread %d; try again later", busy.Function, busy.TID)
	case errors.Is(err, engine.ErrAlreadyApplied):
		fmt.Println("already applied")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("%d functions redirected, threads paused %v\n", res.Functions, res.Paused)
	}
}

// List what a process carries, read from the process itself.
func ExampleStatus() {
	applied, err := engine.Status(4242)
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range applied {
		fmt.Println(a.ID, a.Version, a.State, a.AppliedAt.Format(time.RFC3339), len(a.Functions))
	}
}

// Revert the newest level of a patch.
func ExampleRevert() {
	if _, err := engine.Revert(4242, "ledger-memo", 5*time.Second); errors.Is(err, engine.ErrNotApplied) {
		fmt.Println("not applied")
	} else if err != nil {
		log.Fatal(err)
	}
}
