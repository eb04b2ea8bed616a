#!/bin/sh
# Certificates for the TLS variant of docker-compose (docker-compose.tls.yml), written to
# examples/tls/certs/ (or the directory given): a private CA, the ingress's server certificate
# (DNS:ingress, the name Envoy verifies), and Envoy's client certificate (SPIFFE ID
# spiffe://mirrorplane.local/envoy, the ID the ingress allows). For trying TLS locally only:
# the keys are made readable by the container's non-root user. In production, use your own
# PKI (a service mesh issues the same shapes) and keep keys private.
set -eu
dir="${1:-$(dirname "$0")/certs}"
mkdir -p "$dir"
cd "$dir"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 365 -subj "/CN=Mirrorplane local CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name subject san usage
  openssl req -new $ec -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 90 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue ingress "/CN=ingress" "DNS:ingress,DNS:localhost" serverAuth
issue envoy "/CN=envoy" "URI:spiffe://mirrorplane.local/envoy" clientAuth
chmod 644 ingress.key envoy.key
rm -f ca.srl
echo "certificates in $dir: ca.pem, ingress.pem/.key, envoy.pem/.key (ca.key signs; keep it or delete it)"
