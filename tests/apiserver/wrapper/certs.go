package main

// Self-signed PKI for the test API server: one CA that signs the serving
// certificate (127.0.0.1 / localhost / ::1, and the `kubernetes` Service's
// names and address 10.96.0.1) and an admin client certificate
// (CN=outrigger-admin, O=system:masters). Files are written to --data-dir and
// reused when they already exist and are still valid.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

type pki struct {
	CAFile, CAKeyFile       string
	ServingCert, ServingKey string
	ClientCert, ClientKey   string
	caCert                  *x509.Certificate
	caKey                   *ecdsa.PrivateKey
}

func newPKI(dir string) *pki {
	return &pki{
		CAFile:      filepath.Join(dir, "ca.crt"),
		CAKeyFile:   filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "serving.crt"),
		ServingKey:  filepath.Join(dir, "serving.key"),
		ClientCert:  filepath.Join(dir, "admin.crt"),
		ClientKey:   filepath.Join(dir, "admin.key"),
	}
}

// ensure creates any missing or expired file of the PKI.
func (p *pki) ensure() error {
	if err := p.loadOrCreateCA(); err != nil {
		return err
	}
	if !validPair(p.ServingCert, p.ServingKey, p.caCert) || !servesName(p.ServingCert, kubernetesServiceIP) {
		tmpl := &x509.Certificate{
			Subject: pkix.Name{CommonName: "outrigger-apiserver"},
			// Loopback, and the names and address pods use for the API
			// server (the `kubernetes` Service), as in kube-apiserver's
			// certificate: an in-cluster client checks them.
			DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local"},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP(kubernetesServiceIP)},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		if err := p.issue(tmpl, p.ServingCert, p.ServingKey); err != nil {
			return err
		}
	}
	if !validPair(p.ClientCert, p.ClientKey, p.caCert) {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: "outrigger-admin", Organization: []string{"system:masters"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := p.issue(tmpl, p.ClientCert, p.ClientKey); err != nil {
			return err
		}
	}
	return nil
}

func (p *pki) loadOrCreateCA() error {
	if pair, err := tls.LoadX509KeyPair(p.CAFile, p.CAKeyFile); err == nil {
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if err == nil && ok && time.Now().Add(24*time.Hour).Before(cert.NotAfter) {
			p.caCert, p.caKey = cert, key
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "outrigger-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	if err := writePEM(p.CAKeyFile, key); err != nil {
		return err
	}
	if err := writeFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return err
	}
	p.caCert, p.caKey = cert, key
	// A new CA invalidates every leaf.
	for _, f := range []string{p.ServingCert, p.ServingKey, p.ClientCert, p.ClientKey} {
		_ = os.Remove(f)
	}
	return nil
}

func (p *pki) issue(tmpl *x509.Certificate, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(5 * 365 * 24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	if err := writePEM(keyFile, key); err != nil {
		return err
	}
	return writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func validPair(certFile, keyFile string, ca *x509.Certificate) bool {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return false
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return false
	}
	return time.Now().Add(24 * time.Hour).Before(cert.NotAfter)
}

// servesName: the certificate in certFile is valid for host.
func servesName(certFile, host string) bool {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return false
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	return err == nil && cert.VerifyHostname(host) == nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}

func writePEM(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

// writeFile writes atomically with mode 0600.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, path)
}
