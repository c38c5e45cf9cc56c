package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
)

// DefaultSyncWait is the long-poll wait of Sync when none is given (the
// server's default too).
const DefaultSyncWait = 30 * time.Second

// The calls of a device: enrollment (with the enrollment token), then the
// others with the device certificate (WithClientCert).

// Enroll enrolls a device; req carries the enrollment token and a CSR of
// a key the device made itself.
func (c *Client) Enroll(ctx context.Context, req api.EnrollRequest) (*api.EnrollResponse, error) {
	var resp api.EnrollResponse
	if err := c.postJSON(ctx, api.PathEnroll, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Sync returns the device's desired state. The server answers as soon as
// the state changed after cursor, or when wait has passed (long-poll); the
// call may take wait plus 10 s. A wait of 0 is the server's default,
// DefaultSyncWait.
func (c *Client) Sync(ctx context.Context, cursor int64, wait time.Duration) (*api.SyncResponse, error) {
	if wait <= 0 {
		wait = DefaultSyncWait
	}
	q := url.Values{"cursor": {strconv.FormatInt(cursor, 10)}, "wait": {wait.String()}}
	data, err := c.do(ctx, request{method: http.MethodGet, path: api.PathDeviceSync, query: q, timeout: wait + syncSlack})
	if err != nil {
		return nil, err
	}
	var resp api.SyncResponse
	if err := decode(http.MethodGet, api.PathDeviceSync, data, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// PatchFile downloads the signed patch file whose SHA-256 is sha256hex and
// checks that it is: a file with another digest is a *DigestError.
func (c *Client) PatchFile(ctx context.Context, sha256hex string) ([]byte, error) {
	want := strings.ToLower(sha256hex)
	if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("client: %q is not a SHA-256 in hex", sha256hex)
	}
	data, err := c.do(ctx, request{method: http.MethodGet, path: api.PathDevicePatch + want, timeout: transferTimeout, limit: MaxPatchFile})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, &DigestError{Want: want, Got: got}
	}
	return data, nil
}

// SendInventory reports the device's processes, their modules and the
// patches applied in them.
func (c *Client) SendInventory(ctx context.Context, inv api.Inventory) error {
	return c.postJSON(ctx, api.PathDeviceReport, inv, nil)
}

// SendEvents reports agent events (applied, apply_failed, rolled_back, …).
func (c *Client) SendEvents(ctx context.Context, evs []api.DeviceEvent) error {
	if evs == nil {
		evs = []api.DeviceEvent{}
	}
	return c.postJSON(ctx, api.PathDeviceEvents, api.DeviceEvents{Events: evs}, nil)
}
