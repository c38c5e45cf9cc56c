package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
)

// The calls of an admin, with a bearer token (WithToken) whose role
// allows them: viewer reads, operator publishes and steers rollouts,
// admin revokes devices.

// Publish uploads a signed patch file (.hpatch). The server checks its
// signature against its publisher keys and returns what it stored.
func (c *Client) Publish(ctx context.Context, file []byte) (*api.PatchInfo, error) {
	if len(file) > MaxPatchFile {
		return nil, fmt.Errorf("client: patch file of %d bytes is larger than %d: %w", len(file), MaxPatchFile, ErrTooLarge)
	}
	data, err := c.do(ctx, request{method: http.MethodPost, path: api.PathPatches, body: file,
		contentType: "application/octet-stream", timeout: transferTimeout})
	if err != nil {
		return nil, err
	}
	var info api.PatchInfo
	if err := decode(http.MethodPost, api.PathPatches, data, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Patches lists the published patches.
func (c *Client) Patches(ctx context.Context) ([]api.PatchInfo, error) {
	var out []api.PatchInfo
	if err := c.getJSON(ctx, api.PathPatches, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// StartRollout starts a rollout of a published patch.
func (c *Client) StartRollout(ctx context.Context, req api.RolloutRequest) (*api.Rollout, error) {
	var out api.Rollout
	if err := c.postJSON(ctx, api.PathRollouts, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rollouts lists the rollouts.
func (c *Client) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	var out []api.Rollout
	if err := c.getJSON(ctx, api.PathRollouts, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Rollout returns one rollout and its progress.
func (c *Client) Rollout(ctx context.Context, id string) (*api.Rollout, error) {
	p, err := param("rollout id", id)
	if err != nil {
		return nil, err
	}
	var out api.Rollout
	if err := c.getJSON(ctx, api.PathRollout+p, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rollout actions.
const (
	ActionHalt     = "halt"
	ActionResume   = "resume"
	ActionRollback = "rollback"
)

// RolloutAction halts, resumes or rolls back a rollout (action is
// ActionHalt, ActionResume or ActionRollback) and returns its new state.
func (c *Client) RolloutAction(ctx context.Context, id, action string) (*api.Rollout, error) {
	switch action {
	case ActionHalt, ActionResume, ActionRollback:
	default:
		return nil, fmt.Errorf("client: unknown rollout action %q; use halt, resume or rollback", action)
	}
	p, err := param("rollout id", id)
	if err != nil {
		return nil, err
	}
	var out api.Rollout
	if err := c.postJSON(ctx, api.PathRollout+p+"/"+action, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RollbackRings rolls a rollout back in some of its rings only: their
// devices take the patch off, the other rings keep it (the rollout
// halts if it runs).
func (c *Client) RollbackRings(ctx context.Context, id string, rings []string) (*api.Rollout, error) {
	if len(rings) == 0 {
		return c.RolloutAction(ctx, id, ActionRollback)
	}
	p, err := param("rollout id", id)
	if err != nil {
		return nil, err
	}
	var out api.Rollout
	path := api.PathRollout + p + "/" + ActionRollback + "?" + url.Values{"rings": {strings.Join(rings, ",")}}.Encode()
	if err := c.postJSON(ctx, path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Devices lists the enrolled devices, revoked ones included.
func (c *Client) Devices(ctx context.Context) ([]api.Device, error) {
	var out []api.Device
	if err := c.getJSON(ctx, api.PathDevices, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeDevice revokes a device: its certificate is refused from then on.
func (c *Client) RevokeDevice(ctx context.Context, id string) (*api.Device, error) {
	p, err := param("device id", id)
	if err != nil {
		return nil, err
	}
	var out api.Device
	if err := c.postJSON(ctx, api.PathDevice+p+"/revoke", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ApproveDevice approves a device into a ring, or moves an approved
// device to another ring: the rollouts whose rings start from then on
// count it (an operator token is needed).
func (c *Client) ApproveDevice(ctx context.Context, id, ring string) (*api.Device, error) {
	p, err := param("device id", id)
	if err != nil {
		return nil, err
	}
	var out api.Device
	if err := c.postJSON(ctx, api.PathDevice+p+"/approve", api.ApproveRequest{Ring: ring}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Report returns the per-CVE view of the fleet, of one CVE when cve is
// not empty.
func (c *Client) Report(ctx context.Context, cve string) (*api.Report, error) {
	var q url.Values
	if cve != "" {
		q = url.Values{"cve": {cve}}
	}
	var out api.Report
	if err := c.getJSON(ctx, api.PathReport, q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Events returns up to limit audit events after sequence number after
// (limit 0: the server's default page).
func (c *Client) Events(ctx context.Context, after int64, limit int) ([]api.AuditEvent, error) {
	return c.FindEvents(ctx, api.EventQuery{After: after, Limit: limit})
}

// FindEvents returns the audit events a query selects, oldest first.
func (c *Client) FindEvents(ctx context.Context, eq api.EventQuery) ([]api.AuditEvent, error) {
	q := url.Values{"after": {strconv.FormatInt(eq.After, 10)}}
	if eq.Limit > 0 {
		q.Set("limit", strconv.Itoa(eq.Limit))
	}
	for k, v := range map[string]string{"type": eq.Type, "device": eq.Device, "rollout": eq.Rollout, "patch": eq.Patch, "actor": eq.Actor, "q": eq.Text} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var out []api.AuditEvent
	if err := c.getJSON(ctx, api.PathEvents, q, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// NewToken makes an admin token with a role (an admin token is needed).
func (c *Client) NewToken(ctx context.Context, role, name string) (*api.TokenResponse, error) {
	var out api.TokenResponse
	if err := c.postJSON(ctx, api.PathTokens, api.TokenRequest{Role: role, Name: name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// NewEnrollToken makes an enrollment token: it works for ttl (0: the
// server's default, 24h), for at most uses enrollments (0: any), and
// puts its devices in ring, approved ("": they wait for approval).
func (c *Client) NewEnrollToken(ctx context.Context, name, ring string, uses int, ttl time.Duration) (*api.TokenResponse, error) {
	var out api.TokenResponse
	req := api.TokenRequest{Role: api.RoleEnroll, Name: name, Ring: ring, Uses: uses, TTL: ttl}
	if err := c.postJSON(ctx, api.PathTokens, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateToken replaces the server's data-directory token "admin" or
// "enroll": the old value stops working, the new one is returned (and
// written to the server's file).
func (c *Client) RotateToken(ctx context.Context, which string) (*api.TokenResponse, error) {
	var out api.TokenResponse
	if err := c.postJSON(ctx, api.PathTokenRotate, api.RotateRequest{Token: which}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Tokens lists the tokens the server knows (an admin token is needed).
func (c *Client) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	if err := c.getJSON(ctx, api.PathTokens, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeToken revokes a token by its id (an admin token is needed).
func (c *Client) RevokeToken(ctx context.Context, id string) (*api.TokenInfo, error) {
	id, err := param("token id", id)
	if err != nil {
		return nil, err
	}
	data, err := c.do(ctx, request{method: "DELETE", path: api.PathToken + id})
	if err != nil {
		return nil, err
	}
	var out api.TokenInfo
	return &out, decode("DELETE", api.PathToken+id, data, &out)
}
