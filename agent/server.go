package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/server/api"
)

// The enrolled mode. A serverLink runs beside the agent's Run loop, in
// two goroutines of its own: the sync loop holds the long-poll and makes
// the server's desired state real as files in STATE/server/ (then tells
// Run, which reads that directory like the patch directory), and the
// reporter forwards the agent's events and its inventory. They share
// nothing with Run but channels, the event log (which is locked) and the
// outbox.

const (
	serverDirName   = "server"
	syncWait        = 30 * time.Second
	backoffMin      = time.Second
	backoffMax      = time.Minute
	defaultResync   = 6 * time.Hour
	eventBatchEvery = 500 * time.Millisecond
	eventBatchMax   = 1000
	outboxMax       = 10000
)

type serverLink struct {
	cfg   Config
	log   *eventLog
	dir   string // STATE/server
	id    *identity
	scope func(pid int) bool
	alarm *procAlarm
	out   *outbox
	// changed tells Run that STATE/server/ changed.
	changed chan struct{}
	// synced asks the reporter to compare the inventory with the last
	// one sent (after each sync answer).
	synced chan struct{}
	// refused is set while the server refuses the device (401/403), so
	// that server_refused is logged once per refusal.
	refused atomic.Bool
	// down is set while the server cannot be reached (server_unreachable
	// is logged once per outage).
	down atomic.Bool
	// resync is how often the full inventory is sent even if unchanged.
	resync atomic.Int64

	// realizeMu serialises realize; desired is the last desired state the
	// server sent, made real again when a program whose build-id it
	// targets starts (only patches for build-ids that run are fetched).
	realizeMu sync.Mutex
	desired   []api.DesiredPatch
	buildIDs  engine.BuildIDCache
}

func newServerLink(a *Agent) *serverLink {
	s := &serverLink{
		cfg: a.cfg, log: a.log, dir: a.serverDir, id: a.id, scope: a.inScope, alarm: a.alarm,
		out: newOutbox(outboxMax), changed: make(chan struct{}, 1), synced: make(chan struct{}, 1),
	}
	s.resync.Store(int64(defaultResync))
	return s
}

// run enrolls if needed, then syncs and reports until ctx is done.
func (s *serverLink) run(ctx context.Context) {
	c := s.connect(ctx)
	if c == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.report(ctx, c) })
	wg.Go(func() { s.realizeLoop(ctx, c) })
	s.syncLoop(ctx, c)
	wg.Wait()
}

// connect returns a client with the device's certificate, enrolling
// first if the agent has no identity; it retries with backoff until it
// succeeds or ctx is done (nil).
func (s *serverLink) connect(ctx context.Context) *client.Client {
	var b backoff
	for ctx.Err() == nil {
		if s.id == nil {
			caPEM, err := os.ReadFile(s.cfg.CA)
			if err == nil {
				var id *identity
				if id, err = enroll(ctx, &s.cfg, caPEM); err == nil {
					if err = id.save(s.cfg.StateDir); err == nil {
						s.id = id
						s.log.add(Event{Type: "enrolled", Message: fmt.Sprintf("device %s at %s", id.DeviceID, s.cfg.Server)})
					}
				}
			}
			if err != nil {
				s.failed("enroll", err)
				b.wait(ctx)
				continue
			}
		}
		caPEM := s.id.CA
		if s.cfg.CA != "" {
			if pem, err := os.ReadFile(s.cfg.CA); err == nil {
				caPEM = pem
			}
		}
		c, err := client.New(s.cfg.Server, caPEM, client.WithClientCert(s.id.Cert, s.id.Key))
		if err != nil {
			s.failed("connect", err)
			b.wait(ctx)
			continue
		}
		return c
	}
	return nil
}

// failed records a failed request as an event, once until a request
// succeeds: server_refused for a refusal (the device was revoked, the
// enrollment token is wrong), server_unreachable otherwise. Either way
// the agent retries with backoff and keeps what it has.
func (s *serverLink) failed(what string, err error) {
	var se *client.Error
	switch {
	case client.IsStatus(err, http.StatusUnauthorized) || client.IsStatus(err, http.StatusForbidden):
		if s.refused.CompareAndSwap(false, true) {
			msg := what + ": the server refuses this device; running with the patches it has, retrying"
			if s.id == nil {
				msg = what + ": the server refused the enrollment; check the enrollment token (--enroll-token-file): it may have expired or been used up; retrying"
			}
			s.log.add(Event{Type: "server_refused", Error: err.Error(), Message: msg})
		}
	case errors.As(err, &se):
		s.log.add(Event{Type: "server_error", Error: err.Error(), Message: what})
	default:
		if s.down.CompareAndSwap(false, true) {
			s.log.add(Event{Type: "server_unreachable", Error: err.Error(),
				Message: what + ": running with the patches it has, retrying"})
		}
	}
}

func (s *serverLink) ok() {
	s.refused.Store(false)
	s.down.Store(false)
}

// syncLoop holds the long-poll and makes each new desired state real.
func (s *serverLink) syncLoop(ctx context.Context, c *client.Client) {
	var (
		b      backoff
		cursor int64
		// dirty: the desired state of the last answer is not fully real
		// yet (first answer, a failed download).
		dirty = true
	)
	for ctx.Err() == nil {
		resp, err := c.Sync(ctx, cursor, syncWait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.failed("sync", err)
			b.wait(ctx)
			continue
		}
		s.ok()
		if resp.Resync > 0 {
			s.resync.Store(int64(resp.Resync))
		}
		if dirty || resp.Changed {
			s.realizeMu.Lock()
			s.desired = resp.Patches
			s.realizeMu.Unlock()
			changed, err := s.realize(ctx, c, resp.Patches)
			if changed {
				notify(s.changed)
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// Keep the old cursor: the next answer brings the state
				// again.
				dirty = true
				if client.IsStatus(err, http.StatusUnauthorized) || client.IsStatus(err, http.StatusForbidden) {
					s.failed("download", err)
				} else {
					s.log.add(Event{Type: "download_failed", Error: err.Error()})
				}
				b.wait(ctx)
				continue
			}
		}
		dirty = false
		cursor = resp.Cursor
		b.reset()
		notify(s.synced)
	}
}

// realizeLoop makes the last desired state real again every rescan
// period, so that a patch whose target was not running when it came is
// fetched once a program with that build-id starts.
func (s *serverLink) realizeLoop(ctx context.Context, c *client.Client) {
	t := time.NewTicker(s.cfg.Rescan.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.realizeMu.Lock()
		desired := s.desired
		s.realizeMu.Unlock()
		if desired == nil {
			continue
		}
		if changed, _ := s.realize(ctx, c, desired); changed {
			notify(s.changed)
		}
	}
}

// running returns the build-ids (hex) of the modules that the processes
// in the agent's scope map. An error means they are not known (a failed
// read of /proc), never that nothing runs.
func (s *serverLink) running() (map[string]bool, error) {
	pids, err := listPIDs()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, pid := range pids {
		if !s.scope(pid) {
			continue
		}
		mods, err := engine.ProcessModules(pid, &s.buildIDs)
		if err != nil {
			if gone(err) {
				continue
			}
			return nil, procError("reading the modules of process "+strconv.Itoa(pid), err)
		}
		for _, m := range mods {
			out[hex.EncodeToString(m.BuildID)] = true
		}
	}
	return out, nil
}

// realize makes STATE/server/ hold the files of the patches to apply: a
// missing one is downloaded (the client checks its SHA-256) once some
// process in scope runs its target build-id; a file no longer wanted is
// removed. A file the server still wants stays even when its target no
// longer runs (a program restarting gets it at once, and a failed read of
// /proc can never delete one). It reports whether the directory changed.
func (s *serverLink) realize(ctx context.Context, c *client.Client, patches []api.DesiredPatch) (changed bool, err error) {
	s.realizeMu.Lock()
	defer s.realizeMu.Unlock()
	// running is read only if a download depends on it.
	var running map[string]bool
	var runErr error
	want := map[string]bool{}  // files to keep
	fetch := map[string]bool{} // files to download if missing
	for _, d := range patches {
		if d.Action != api.ActionApply {
			continue
		}
		if !validSHA256(d.SHA256) {
			s.log.add(Event{Type: "patch_refused", Patch: d.ID, Error: fmt.Sprintf("the server named the file %q, not a SHA-256", d.SHA256)})
			continue
		}
		want[d.SHA256] = true
		if d.TargetBuildID == "" {
			fetch[d.SHA256] = true
			continue
		}
		if _, err := os.Stat(filepath.Join(s.dir, d.SHA256+".hpatch")); err == nil {
			continue // already here
		}
		if running == nil && runErr == nil {
			running, runErr = s.running()
			if runErr != nil {
				s.alarm.failed("server patches", "not downloading the patches whose target may run; kept every file", runErr)
			} else {
				s.alarm.ok("server patches")
			}
		}
		if runErr == nil && running[d.TargetBuildID] {
			fetch[d.SHA256] = true // else fetched when a program with that build-id runs
		}
	}
	// Remove first: a revert must not wait for a download.
	ents, rerr := os.ReadDir(s.dir)
	if rerr != nil {
		return false, rerr
	}
	for _, e := range ents {
		name := e.Name()
		sum, isPatch := strings.CutSuffix(name, ".hpatch")
		if isPatch && want[sum] {
			continue
		}
		if !isPatch && !strings.HasPrefix(name, ".") {
			continue
		}
		if os.Remove(filepath.Join(s.dir, name)) == nil && isPatch {
			changed = true
		}
	}
	for sum := range fetch {
		path := filepath.Join(s.dir, sum+".hpatch")
		if _, err := os.Stat(path); err == nil {
			continue
		}
		data, derr := c.PatchFile(ctx, sum)
		if derr == nil {
			derr = writeFileAtomic(path, data, 0o600)
		}
		if derr != nil {
			err = errors.Join(err, fmt.Errorf("patch %s: %w", sum, derr))
			continue
		}
		changed = true
	}
	return changed, err
}

func validSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32 && s == strings.ToLower(s)
}

// report sends the outbox's events in batches and the inventory when it
// may have changed: after an apply, a revert, a crash or a rollback,
// after each sync answer if it differs from the last one sent, and every
// resync period anyway.
func (s *serverLink) report(ctx context.Context, c *client.Client) {
	var (
		b        backoff
		inv      = newInventorier(s.scope)
		lastSent []byte
		lastAt   time.Time
		check    = true // compare the inventory with the last one sent
	)
	tick := time.NewTicker(eventBatchEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// A last try for the events of the stop itself.
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if evs, end := s.out.peek(eventBatchMax); len(evs) > 0 && c.SendEvents(fctx, evs) == nil {
				s.out.drop(end)
			}
			cancel()
			return
		case <-tick.C:
		case <-s.synced:
			check = true
		}
		if !b.due() {
			continue
		}
		if evs, end := s.out.peek(eventBatchMax); len(evs) > 0 {
			if err := c.SendEvents(ctx, evs); err != nil {
				s.failed("events", err)
				b.fail()
				continue
			}
			s.ok()
			s.out.drop(end)
		}
		force := s.out.takeInventoryDue() || time.Since(lastAt) > time.Duration(s.resync.Load())
		if !force && !check {
			b.reset()
			continue
		}
		data, err := inv.build()
		if err != nil {
			s.alarm.failed("inventory", "not reported until /proc can be read", err)
			s.out.inventoryDue()
			continue
		}
		s.alarm.ok("inventory")
		raw, _ := json.Marshal(data)
		if !force && bytes.Equal(raw, lastSent) {
			check = false
			b.reset()
			continue
		}
		if err := c.SendInventory(ctx, data); err != nil {
			s.failed("inventory", err)
			s.out.inventoryDue()
			b.fail()
			continue
		}
		s.ok()
		lastSent, lastAt, check = raw, time.Now(), false
		b.reset()
	}
}

// notify sends on a channel of capacity 1 without blocking.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// backoff is exponential backoff with jitter, 1 s to 60 s.
type backoff struct {
	d    time.Duration
	next time.Time
}

func (b *backoff) delay() time.Duration {
	if b.d == 0 {
		b.d = backoffMin
	} else {
		b.d = min(b.d*2, backoffMax)
	}
	// Jitter: between half and all of the delay, so that a fleet that
	// lost its server does not come back in step.
	return b.d/2 + rand.N(b.d/2+1)
}

// wait sleeps for the next delay (or until ctx is done).
func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.delay())
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// fail schedules the next attempt (for loops that cannot sleep).
func (b *backoff) fail()     { b.next = time.Now().Add(b.delay()) }
func (b *backoff) due() bool { return !time.Now().Before(b.next) }
func (b *backoff) reset()    { b.d, b.next = 0, time.Time{} }

// outbox keeps the events not yet sent to the server, in order, bounded
// (the oldest are dropped past max), so that a server that is down or
// restarting loses nothing short of that. The event log feeds it.
type outbox struct {
	mu     sync.Mutex
	events []api.DeviceEvent
	// first is the sequence number of events[0]: a batch is dropped by
	// number once sent, even if the bound trimmed the front meanwhile.
	first int64
	// inflight is the end of the last batch peeked: events trimmed
	// before it are not counted as dropped (they are being sent).
	inflight int64
	max      int
	dropped  int
	// invDue: an event changed what is applied; send the inventory.
	invDue bool
}

func newOutbox(max int) *outbox { return &outbox{max: max} }

// push adds an event (called by the event log, from any goroutine).
func (o *outbox) push(e Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch e.Type {
	case "applied", "reverted", "crash", "rolled_back", "apply_failed", "probe_failed", "patch_lost":
		o.invDue = true
	}
	if len(o.events) >= o.max {
		n := len(o.events) - o.max + 1
		o.events = o.events[n:]
		sending := max(0, min(o.inflight, o.first+int64(n))-o.first)
		o.dropped += n - int(sending)
		o.first += int64(n)
	}
	o.events = append(o.events, api.DeviceEvent{
		Time: e.Time, Type: e.Type, PID: e.PID, Patch: e.Patch, Signal: e.Signal,
		Function: e.Function, Error: e.Error, Message: e.Message,
	})
}

// peek returns up to n of the oldest events, which stay in the outbox
// until drop(end).
func (o *outbox) peek(n int) (evs []api.DeviceEvent, end int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		lost := api.DeviceEvent{Time: time.Now(), Type: "events_dropped",
			Message: fmt.Sprintf("%d events were dropped while the server could not be reached", o.dropped)}
		o.events = append([]api.DeviceEvent{lost}, o.events...)
		o.first--
		o.dropped = 0
	}
	evs = append(evs, o.events[:min(n, len(o.events))]...)
	o.inflight = o.first + int64(len(evs))
	return evs, o.inflight
}

// drop removes the events before sequence number end (sent).
func (o *outbox) drop(end int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := end - o.first; n > 0 {
		n = min(n, int64(len(o.events)))
		o.events = o.events[n:]
		o.first += n
	}
}

func (o *outbox) inventoryDue() {
	o.mu.Lock()
	o.invDue = true
	o.mu.Unlock()
}

func (o *outbox) takeInventoryDue() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	due := o.invDue
	o.invDue = false
	return due
}
