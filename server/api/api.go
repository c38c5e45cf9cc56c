// Package api is the wire contract of hotpatch-server: the JSON types of
// its REST API and the paths they travel on. The server, the client
// package (used by the CLI and the agent) and the tests share it; it
// imports nothing of the server. See docs/server.md.
package api

import "time"

// Paths. {x} marks a path parameter.
const (
	PathEnroll          = "/v1/enroll"           // POST EnrollRequest → EnrollResponse (enrollment token)
	PathDeviceSync      = "/v1/device/sync"      // GET ?cursor=N&wait=30s → SyncResponse (device certificate)
	PathDevicePatch     = "/v1/device/patches/"  // GET {sha256} → the signed patch file (device certificate)
	PathDeviceReport    = "/v1/device/inventory" // POST Inventory (device certificate)
	PathDeviceEvents    = "/v1/device/events"    // POST DeviceEvents (device certificate)
	PathPatches         = "/v1/patches"          // POST the .hpatch file → PatchInfo; GET → []PatchInfo
	PathRollouts        = "/v1/rollouts"         // POST RolloutRequest → Rollout; GET → []Rollout
	PathRollout         = "/v1/rollouts/"        // GET {id} → Rollout; POST {id}/halt|resume|rollback → Rollout
	PathDevices         = "/v1/devices"          // GET → []Device
	PathDevice          = "/v1/devices/"         // POST {id}/revoke → Device; POST {id}/approve ApproveRequest → Device
	PathReport          = "/v1/report"           // GET ?cve=ID → Report
	PathEvents          = "/v1/events"           // GET ?after=SEQ&limit=N[&type=&device=&rollout=&patch=&actor=&q=] → []AuditEvent
	PathTokens          = "/v1/tokens"           // POST TokenRequest → TokenResponse; GET → []TokenInfo (admin token)
	PathToken           = "/v1/tokens/"          // DELETE {id} → TokenInfo (admin token)
	PathTokenRotate     = "/v1/tokens/rotate"    // POST RotateRequest → TokenResponse (admin token)
	PathMetrics         = "/metrics"             // GET, Prometheus text (viewer token)
	PathHealth          = "/healthz"             // GET, no authentication
	HeaderAuthorization = "Authorization"        // "Bearer TOKEN" for admin requests
)

// Roles of admin tokens, each including the ones before it.
const (
	RoleViewer   = "viewer"   // read everything
	RoleOperator = "operator" // publish patches, start and steer rollouts
	RoleAdmin    = "admin"    // revoke devices, everything
)

// TokenRequest asks for a new admin token with a role, or an enrollment
// token (role "enroll").
type TokenRequest struct {
	Role string `json:"role"` // viewer, operator, admin or enroll
	Name string `json:"name"` // who or what it is for; shown in the audit log
	// Enrollment tokens only. Ring binds the devices that enroll with it
	// to a ring, approved at once ("": each device waits for an
	// operator's approval). Uses limits the enrollments (0: no limit);
	// TTL is how long the token works (0: 24h; at most 30 days).
	Ring string        `json:"ring,omitempty"`
	Uses int           `json:"uses,omitempty"`
	TTL  time.Duration `json:"ttl_ns,omitempty"`
}

// RoleEnroll is the role of enrollment tokens: they can only enroll.
const RoleEnroll = "enroll"

// RotateRequest replaces one of the server's data-directory tokens: the
// old value stops working at once, the new one is written to the file
// and returned.
type RotateRequest struct {
	Token string `json:"token"` // "admin" (admin.token) or "enroll" (enroll.token)
}

// ApproveRequest approves a device into a ring (or moves it to another).
type ApproveRequest struct {
	Ring string `json:"ring"`
}

// TokenResponse is a new token: shown once, the server keeps its hash only.
type TokenResponse struct {
	Token string `json:"token"`
	ID    string `json:"id"` // to list and revoke it by
	Role  string `json:"role"`
	Name  string `json:"name"`
}

// TokenInfo describes a token the server knows, never its value.
type TokenInfo struct {
	ID      string    `json:"id"`   // the first 16 hex digits of the SHA-256 of the token
	Role    string    `json:"role"` // viewer, operator, admin, or enroll (the enrollment token)
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// DataDir: the server's admin.token or enroll.token, which cannot be
	// revoked (rotate it instead).
	DataDir bool `json:"data_dir,omitempty"`
	// Enrollment tokens: expiry (zero: never), uses allowed (0: any) and
	// made, and the ring their devices are approved into.
	Expires time.Time `json:"expires,omitzero"`
	MaxUses int       `json:"max_uses,omitempty"`
	Uses    int       `json:"uses,omitempty"`
	Ring    string    `json:"ring,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"` // one line
}

// EnrollRequest enrolls a device. The agent makes its own key; only the
// CSR travels.
type EnrollRequest struct {
	Token    string            `json:"token"`
	Name     string            `json:"name"`
	Hostname string            `json:"hostname"`
	Kernel   string            `json:"kernel"`
	Labels   map[string]string `json:"labels,omitempty"` // ring=canary, …
	CSR      string            `json:"csr"`              // PEM
}

// EnrollResponse is the device's identity.
type EnrollResponse struct {
	DeviceID string `json:"device_id"`
	Cert     string `json:"cert"` // PEM, client authentication
	CA       string `json:"ca"`   // PEM, the server's CA
}

// SyncResponse is a device's full desired state (never a diff: a lost
// answer loses nothing).
type SyncResponse struct {
	// Cursor is to be sent back with the next sync; the server answers
	// at once when the device's desired state changed after it.
	Cursor  int64          `json:"cursor"`
	Changed bool           `json:"changed"`
	Patches []DesiredPatch `json:"patches"`
	// Resync is how long until the device should re-send its full
	// inventory anyway.
	Resync time.Duration `json:"resync_ns,omitempty"`
}

// DesiredPatch is one patch a device should have applied (Action
// "apply") or must take off (Action "revert").
type DesiredPatch struct {
	ID            string `json:"id"`
	Version       uint32 `json:"version"`
	SHA256        string `json:"sha256"` // of the signed file; fetch it from PathDevicePatch
	Action        string `json:"action"` // "apply" or "revert"
	Rollout       string `json:"rollout"`
	TargetBuildID string `json:"target_build_id"`
}

// Actions of a DesiredPatch.
const (
	ActionApply  = "apply"
	ActionRevert = "revert"
)

// Inventory is what a device reports: its processes, their modules'
// build-ids, what is applied.
type Inventory struct {
	Hostname  string    `json:"hostname"`
	Kernel    string    `json:"kernel"`
	Processes []Process `json:"processes"`
	// Eligibility lists what on this host keeps the agent from patching
	// (hotpatch check --host, problems only; none: nothing in the way).
	Eligibility []Finding `json:"eligibility,omitempty"`
}

// Finding is one problem found by the agent's eligibility checks (package
// eligibility): Status "block" (no patch can be applied) or "warn".
type Finding struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Process is one process of a device's inventory.
type Process struct {
	PID     int       `json:"pid"`
	Exe     string    `json:"exe"`
	Modules []Module  `json:"modules"`
	Patches []Applied `json:"patches,omitempty"`
	// Blockers is what would block or hinder patching this process (a
	// tracer, seccomp, user-level context switching, …), problems only.
	Blockers []Finding `json:"blockers,omitempty"`
}

// Module is one mapped ELF file of a process.
type Module struct {
	Path    string `json:"path"`
	BuildID string `json:"build_id"` // hex
	// Changed: the file on disk is no longer the one mapped (a newer
	// package was installed); a restart picks it up.
	Changed bool `json:"changed,omitempty"`
}

// Applied is one patch applied in a process.
type Applied struct {
	ID      string `json:"id"`
	Version uint32 `json:"version"`
	State   string `json:"state"` // "applied" or a transient engine state
}

// DeviceEvents carries agent events (the same JSON as the agent's event
// log, see agent.Event) to the server.
type DeviceEvents struct {
	Events []DeviceEvent `json:"events"`
}

// DeviceEvent is an agent event, as much of it as the server uses.
type DeviceEvent struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"` // applied, apply_failed, busy, reverted, crash, probe_failed, rolled_back, …
	PID      int       `json:"pid,omitempty"`
	Patch    string    `json:"patch,omitempty"`
	Signal   string    `json:"signal,omitempty"`
	Function string    `json:"function,omitempty"`
	Error    string    `json:"error,omitempty"`
	Message  string    `json:"message,omitempty"`
}

// PatchInfo describes a published patch.
type PatchInfo struct {
	SHA256        string    `json:"sha256"`
	ID            string    `json:"id"`
	Version       uint32    `json:"version"`
	CVEs          []string  `json:"cves,omitempty"`
	Severity      string    `json:"severity,omitempty"`
	Description   string    `json:"description,omitempty"`
	TargetName    string    `json:"target_name"`
	TargetBuildID string    `json:"target_build_id"`
	Signer        string    `json:"signer"` // key id
	Size          int       `json:"size"`
	Functions     []string  `json:"functions"`
	Published     time.Time `json:"published"`
	StartupOnly   bool      `json:"startup_only,omitempty"` // changes only start-up code: processes carrying it still need a restart
}

// RolloutRequest starts a rollout of a published patch.
type RolloutRequest struct {
	Patch       string            `json:"patch"`              // patch id (newest version) or sha256
	Rings       []string          `json:"rings"`              // in order; a ring is the devices labelled ring=NAME, "all" every device
	Soak        time.Duration     `json:"soak_ns"`            // after each ring, before the next (default 0)
	MaxFailures int               `json:"max_failures"`       // per ring: more failed devices halt the rollout (default 0)
	Windows     map[string]string `json:"windows,omitempty"`  // ring → "HH:MM-HH:MM" (server local time)
	Critical    bool              `json:"critical,omitempty"` // ignores the windows
}

// Rollout states.
const (
	StateRunning    = "running"
	StateHalted     = "halted"
	StateDone       = "done"
	StateRolledBack = "rolled_back"
)

// Ring states.
const (
	RingPending = "pending"
	RingWaiting = "waiting" // for its maintenance window
	RingActive  = "active"
	RingSoaking = "soaking"
	RingDone    = "done"
	RingHalted  = "halted"
)

// Rollout is a rollout and its progress, ring by ring.
type Rollout struct {
	ID          string        `json:"id"`
	Patch       PatchInfo     `json:"patch"`
	State       string        `json:"state"`
	Reason      string        `json:"reason,omitempty"` // why it halted
	Soak        time.Duration `json:"soak_ns"`
	MaxFailures int           `json:"max_failures"`
	Critical    bool          `json:"critical,omitempty"`
	Rings       []Ring        `json:"rings"`
	Created     time.Time     `json:"created"`
	Updated     time.Time     `json:"updated"`
}

// Ring is one ring of a rollout.
type Ring struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Window    string    `json:"window,omitempty"`
	Devices   int       `json:"devices"`    // in the ring
	Applied   int       `json:"applied"`    // patch applied in every matching process
	NotNeeded int       `json:"not_needed"` // no process maps the target
	Failed    int       `json:"failed"`     // failed to apply, or rolled back by the agent
	Pending   int       `json:"pending"`
	Started   time.Time `json:"started,omitzero"`
	SoakUntil time.Time `json:"soak_until,omitzero"`
	// Revert: the patch comes off this ring's devices (the ring failed
	// beyond the budget, or an operator rolled it back).
	Revert bool `json:"revert,omitempty"`
}

// Device is an enrolled device.
type Device struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Hostname string            `json:"hostname"`
	Kernel   string            `json:"kernel"`
	Labels   map[string]string `json:"labels,omitempty"` // as the device sent them; its "ring" label is only a request
	// Ring is the device's rollout ring, set by an operator (approve,
	// set-ring) or by the enrollment token it came with; it counts only
	// once Approved is set. An unapproved device is in no ring: it gets
	// no rollout and counts against no budget.
	Ring     string    `json:"ring,omitempty"`
	Approved time.Time `json:"approved,omitzero"`
	Enrolled time.Time `json:"enrolled"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Revoked  time.Time `json:"revoked,omitzero"`
	// Processes and Protected summarise the last inventory.
	Processes int      `json:"processes"`
	Applied   []string `json:"applied,omitempty"` // patch ids applied somewhere on the device
}

// Report is the per-CVE view of the fleet.
type Report struct {
	CVEs  []CVEReport  `json:"cves"`
	Rings []RingReport `json:"rings,omitempty"`
}

// CVEReport counts devices per CVE: vulnerable (some process runs a build
// a patch for the CVE targets, unpatched), protected in memory (every
// such process carries the patch), fixed on disk (the vulnerable build
// is still mapped nowhere, or only by processes whose file on disk
// changed).
type CVEReport struct {
	CVE         string           `json:"cve"`
	Patches     []string         `json:"patches"`
	Vulnerable  int              `json:"vulnerable"`
	Protected   int              `json:"protected"`
	FixedOnDisk int              `json:"fixed_on_disk"`
	Devices     []DeviceExposure `json:"devices,omitempty"`
	NeedRestart int              `json:"restart_needed"` // of Vulnerable: those whose processes carry only a start-up-only patch
}

// DeviceExposure is one device's line of a CVE report.
type DeviceExposure struct {
	Device string `json:"device"`
	Name   string `json:"name"`
	State  string `json:"state"` // vulnerable, restart_needed, protected, fixed_on_disk
}

// RingReport is the progress of the rollouts per ring.
type RingReport struct {
	Rollout string `json:"rollout"`
	Ring    string `json:"ring"`
	State   string `json:"state"`
	Applied int    `json:"applied"`
	Devices int    `json:"devices"`
}

// EventQuery selects audit events (GET PathEvents): those after a
// sequence number, oldest first, at most Limit, matching every filter
// given.
type EventQuery struct {
	After   int64
	Limit   int
	Type    string // exact
	Device  string // device id
	Rollout string
	Patch   string // patch id
	Actor   string // exact ("token:NAME", "device:ID", "server"), or a prefix ending in ':'
	Text    string // a substring of the message, any case
}

// AuditEvent is one line of the audit log: an admin action or a device
// event.
type AuditEvent struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"` // "token:NAME" or "device:ID" or "server"
	Type    string    `json:"type"`
	Device  string    `json:"device,omitempty"`
	Rollout string    `json:"rollout,omitempty"`
	Patch   string    `json:"patch,omitempty"`
	Message string    `json:"message,omitempty"`
}
