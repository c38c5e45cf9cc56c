package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
)

// The enrolled agent's identity lives in STATE/identity/: its private key
// (made on this host, never sent), the certificate the server issued for
// it, the server's CA and the device id. device_id is written last, so an
// identity is complete exactly when it exists.
const (
	identityDir  = "identity"
	idKeyFile    = "key.pem"
	idCertFile   = "cert.pem"
	idCAFile     = "ca.pem"
	idDeviceFile = "device_id"
)

// identity is an enrolled device's credentials.
type identity struct {
	DeviceID string
	Key      []byte // PEM, PKCS#8
	Cert     []byte // PEM
	CA       []byte // PEM, the server's CA
}

// loadIdentity reads the identity in stateDir; it returns nil, nil when
// the agent has not enrolled yet (or an enrollment was cut short).
func loadIdentity(stateDir string) (*identity, error) {
	dir := filepath.Join(stateDir, identityDir)
	dev, err := os.ReadFile(filepath.Join(dir, idDeviceFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	id := &identity{DeviceID: strings.TrimSpace(string(dev))}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{idKeyFile, &id.Key}, {idCertFile, &id.Cert}, {idCAFile, &id.CA}} {
		if *f.dst, err = os.ReadFile(filepath.Join(dir, f.name)); err != nil {
			return nil, fmt.Errorf("identity: %v; remove %s and enroll again with --enroll-token-file", err, dir)
		}
	}
	if id.DeviceID == "" {
		return nil, fmt.Errorf("identity: %s is empty; remove %s and enroll again with --enroll-token-file", filepath.Join(dir, idDeviceFile), dir)
	}
	return id, nil
}

// save writes the identity, each file under a temporary name, synced and
// renamed; the device id last.
func (id *identity) save(stateDir string) error {
	dir := filepath.Join(stateDir, identityDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{idKeyFile, id.Key, 0o600},
		{idCertFile, id.Cert, 0o644},
		{idCAFile, id.CA, 0o644},
		{idDeviceFile, []byte(id.DeviceID + "\n"), 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("identity: %v", err)
		}
	}
	return nil
}

// enroll makes a key and a CSR and enrolls with the server using the
// enrollment token; the key never leaves the host.
func enroll(ctx context.Context, cfg *Config, caPEM []byte) (*identity, error) {
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	name := cfg.Name
	if name == "" {
		name = host
	}
	csr, err := pki.CSR(key, name)
	if err != nil {
		return nil, err
	}
	token, err := enrollToken(cfg)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg.Server, caPEM)
	if err != nil {
		return nil, err
	}
	resp, err := c.Enroll(ctx, api.EnrollRequest{
		Token: token, Name: name, Hostname: host, Kernel: kernelRelease(),
		Labels: cfg.Labels, CSR: string(csr),
	})
	if err != nil {
		return nil, err
	}
	id := &identity{DeviceID: resp.DeviceID, Key: keyPEM, Cert: []byte(resp.Cert), CA: []byte(resp.CA)}
	if len(id.CA) == 0 {
		id.CA = caPEM
	}
	return id, nil
}

// enrollToken is the enrollment token: cfg.EnrollToken, or the content
// of cfg.EnrollTokenFile (read only when enrolling: the file may go once
// the agent has its identity).
func enrollToken(cfg *Config) (string, error) {
	if cfg.EnrollToken != "" {
		return cfg.EnrollToken, nil
	}
	if cfg.EnrollTokenFile == "" {
		return "", errors.New("no enrollment token: give --enroll-token-file FILE or set HOTPATCH_ENROLL_TOKEN")
	}
	b, err := os.ReadFile(cfg.EnrollTokenFile)
	if err != nil {
		return "", fmt.Errorf("enrollment token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("enrollment token: %s is empty", cfg.EnrollTokenFile)
	}
	return tok, nil
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// writeFileAtomic writes a file under a temporary name in the same
// directory (starting with a dot, so no patch directory reader takes it),
// syncs it and renames it: a crash leaves the old file or the new one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
