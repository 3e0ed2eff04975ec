#!/usr/bin/env bash
# gen-test-tls.sh — the throwaway TLS material of tests/stratum_tls.rs and
# tests/sigserve_tls.rs: a test CA, a server certificate it signs for
# localhost / 127.0.0.1 (pool.*) and a client certificate (client.*), EC
# P-256, valid 100 years. Committed under tests/data/tls/ so the tests need no
# openssl; run this only to replace them. These keys protect nothing.
set -euo pipefail
out=${1:-tests/data/tls}
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days 36500 -subj "/CN=hashrig test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/pool.key"
openssl pkcs8 -topk8 -nocrypt -in "$tmp/pool.key" -out pool.key
openssl req -new -key pool.key -subj "/CN=localhost" -out "$tmp/pool.csr"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$tmp/ext"
openssl x509 -req -in "$tmp/pool.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial -days 36500 -sha256 \
  -extfile "$tmp/ext" -out pool.pem
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/client.key"
openssl pkcs8 -topk8 -nocrypt -in "$tmp/client.key" -out client.key
openssl req -new -key client.key -subj "/CN=hashrig test validator" -out "$tmp/client.csr"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=clientAuth" >"$tmp/cext"
openssl x509 -req -in "$tmp/client.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial -days 36500 -sha256 \
  -extfile "$tmp/cext" -out client.pem
rm -f ca.srl
# The pin tests/stratum_tls.rs uses: SHA-256 of the pool certificate's DER.
openssl x509 -in pool.pem -outform der | sha256sum | cut -d' ' -f1 >pool.sha256
echo "wrote $(pwd)/{ca.pem,pool.pem,pool.key,pool.sha256,client.pem,client.key}"
