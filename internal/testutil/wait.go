package testutil

import (
	"fmt"
	"testing"
	"time"
)

// Eventually calls cond until it returns true, and fails the test (Fatal)
// if it has not within timeout. It polls at a short interval that grows to
// 50 ms. msgf says what was awaited: a format and its arguments, or a single
// func() string called at the failure (to show the last state seen). Call
// it from the test's goroutine.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgf ...any) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	interval := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", message(msgf, "condition"), timeout)
		}
		time.Sleep(interval)
		interval = min(2*interval, 50*time.Millisecond)
	}
}

// Receive waits for a value from ch, or for ch to be closed (then it
// returns the zero value), and fails the test (Fatal) if neither happens
// within timeout. msgf is as for Eventually.
func Receive[T any](t testing.TB, ch <-chan T, timeout time.Duration, msgf ...any) T {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: not within %v", message(msgf, "receive"), timeout)
	}
	panic("unreachable")
}

func message(msgf []any, what string) string {
	if len(msgf) == 0 {
		return "waiting for " + what
	}
	if f, ok := msgf[0].(func() string); ok && len(msgf) == 1 {
		return f()
	}
	format, ok := msgf[0].(string)
	if !ok {
		return fmt.Sprint(msgf...)
	}
	return fmt.Sprintf(format, msgf[1:]...)
}
