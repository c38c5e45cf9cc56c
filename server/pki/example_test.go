package pki_test

import (
	"fmt"
	"log"
	"os"

	"github.com/hotpatch/hotpatch/server/pki"
)

// Enrollment, end to end: the server initialises its data directory, an
// agent makes a key and a CSR, the server issues the certificate, and the
// agent builds its TLS configuration from it.
func Example() {
	dir, err := os.MkdirTemp("", "hotpatch-server")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Server, first start.
	ca, err := pki.Init(dir, []string{"hotpatch.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	enrollToken, enrollHash := pki.NewToken() // print the token once, store the hash

	// Agent: the key stays on the host; the CSR and the token go to the server.
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		log.Fatal(err)
	}
	csr, err := pki.CSR(key, "web-17")
	if err != nil {
		log.Fatal(err)
	}

	// Server, POST /v1/enroll.
	if !pki.EqualHash(pki.TokenHash(enrollToken), enrollHash) {
		log.Fatal("bad enrollment token")
	}
	certPEM, serial, err := ca.Issue(csr, "d-0001")
	if err != nil {
		log.Fatal(err)
	}
	_ = serial // stored with the device, checked on every request

	// Agent: trust ca.pem, present the certificate.
	cfg, err := pki.ClientTLS(ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(cfg.Certificates), "client certificate")
	// Output: 1 client certificate
}
