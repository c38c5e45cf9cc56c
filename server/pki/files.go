package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Names of the files in the data directory.
const (
	CAKeyFile      = "ca.key"
	CACertFile     = "ca.pem"
	ServerKeyFile  = "server.key"
	ServerCertFile = "server.pem"
)

// PEM block types.
const (
	pemCert       = "CERTIFICATE"
	pemPrivateKey = "PRIVATE KEY"    // PKCS#8
	pemECKey      = "EC PRIVATE KEY" // SEC1, as written by openssl ecparam
	pemCSR        = "CERTIFICATE REQUEST"
	pemCSROld     = "NEW CERTIFICATE REQUEST"
)

// Modes of the files Init writes.
const (
	keyMode  fs.FileMode = 0o600
	certMode fs.FileMode = 0o644
)

// exists reports whether path exists. Errors other than "does not exist"
// (permissions, I/O) are returned.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, dirError("", err, "cannot check file")
}

// writeNew writes data to path with mode perm if path does not exist yet.
// The data goes to a temporary file in the same directory, which is synced
// and then hard-linked to path: the link fails if path exists, so an
// existing file is never replaced, and path is either complete or absent.
// It reports whether it created path; when another process created it
// first, it returns false and no error, and the caller loads that file.
// On file systems without hard links it falls back to a rename after
// checking that path does not exist.
func writeNew(path string, data []byte, perm fs.FileMode) (created bool, err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return false, dirError("", err, "cannot create %s", base)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // the final name, if made, is a second link
	if err := writeSync(f, data, perm); err != nil {
		return false, dirError("", err, "cannot write %s", base)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		ok, statErr := exists(path)
		if statErr != nil {
			return false, statErr
		}
		if ok {
			return false, nil
		}
		if err := os.Rename(tmp, path); err != nil {
			return false, dirError("", err, "cannot create %s", base)
		}
	}
	syncDir(dir)
	return true, nil
}

func writeSync(f *os.File, data []byte, perm fs.FileMode) error {
	err := f.Chmod(perm) // not subject to the umask
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a new directory entry durable. Errors are ignored: some
// systems cannot sync a directory, and the file itself is already synced.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

// readCert reads the first certificate of a PEM file.
func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, dirError("", err, "cannot read certificate")
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemCert {
		return nil, dirError(path, nil, "no PEM %q block", pemCert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, dirError(path, err, "malformed certificate")
	}
	return cert, nil
}

// readKey reads a PEM private key (PKCS#8, or SEC1 for ECDSA) that can sign.
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, dirError("", err, "cannot read private key")
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, dirError(path, nil, "no PEM private key block")
	}
	var key any
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemECKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, dirError(path, nil, "PEM block is %q, want %q", block.Type, pemPrivateKey)
	}
	if err != nil {
		return nil, dirError(path, err, "malformed private key")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, dirError(path, nil, "private key of type %T cannot sign", key)
	}
	return signer, nil
}

// samePublicKey reports whether key is the private half of pub.
func samePublicKey(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
