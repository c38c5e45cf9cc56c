// Package testutil holds what the tests of several packages share: waiting
// for a fact with a deadline (Eventually, Receive) instead of sleeping, and
// making a signed patch the way a user's patch reaches the engine, the
// agent or the server (SignedPatch, FixturePatch). It is imported by tests
// only.
//
// # Waiting for facts, not for time
//
// A test that sleeps and then checks passes on a fast machine and fails on
// a loaded one, or, worse, a negative check after a sleep ("nothing was
// applied") passes on a slow machine without testing anything. The rules:
//
//   - Wait for the fact with a deadline: Eventually polls a condition until
//     it holds; Receive waits for a channel. The deadline is generous (it
//     only bounds a failing test) and never an assertion about speed.
//   - Before asserting that something did not happen, wait for a positive
//     event that proves the input was processed (an event logged after it,
//     a later request answered), then assert the negative.
//
// Packages that the patch helpers import (builder, patch, unwind, fixture)
// cannot use this package from their internal tests: that would be an
// import cycle.
package testutil
