#!/usr/bin/env bash
# Regenerates the test certificates (valid for 100 years): a cluster CA and a
# node certificate it signs (SAN "foundation", the default server name), and
# a rogue CA with its own node certificate, which the cluster must refuse.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
for ca in ca rogue-ca; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days $days \
    -subj "/CN=$ca" -keyout $ca.key -out $ca.pem 2>/dev/null
done
for pair in "node ca" "rogue rogue-ca"; do
  set -- $pair
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
    -keyout $1.key -out $1.csr 2>/dev/null
  printf 'subjectAltName=DNS:foundation\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days $days -extfile ext.cnf -out $1.pem 2>/dev/null
  rm -f $1.csr ext.cnf
done
rm -f *.srl ca.key rogue-ca.key
