#!/usr/bin/env bash
# A private CA and a server certificate for Redis over TLS (docker-compose.redis-tls.yml), and with
# --signing the key pair for message signing (QWEN3B_SIGNING_*, README "Message signing").
#
#   scripts/make_tls_certs.sh OUTDIR NAME [NAME...]             # TLS only
#   scripts/make_tls_certs.sh --signing OUTDIR [NAME...]        # the signing pair; TLS too when NAMEs are given
#
# NAMEs are what clients write as the host in QWEN3B_BROKER_URL (DNS names or IP addresses);
# localhost and 127.0.0.1 are always added. Writes OUTDIR/ca.crt (copy it to every host, point
# QWEN3B_BROKER_TLS_CA_FILE at it), OUTDIR/redis.crt and OUTDIR/redis.key (the broker host only).
# The CA key stays in OUTDIR/ca.key: keep it off the worker hosts. The tests use this script too.
#
# --signing writes OUTDIR/signing.key (an RSA key: Celery signs with RSA only), OUTDIR/signing.crt
# (its self-signed certificate) and OUTDIR/signing-certs/ (the cert store: the certificates whose
# messages are accepted, here that one). Copy all three to every host that sends or runs tasks
# (producer, workers, Flower) and set QWEN3B_SIGNING_KEY, _CERT and _CERT_STORE there. Whoever
# holds signing.key can have the workers run anything: keep it as private as the Redis password.
set -euo pipefail
usage() {
  echo "usage: $0 OUTDIR NAME [NAME...]        (TLS for Redis)" >&2
  echo "       $0 --signing OUTDIR [NAME...]   (the message-signing pair; TLS too when NAMEs are given)" >&2
  exit 2
}
signing=0
if [[ ${1:-} == --signing ]]; then
  signing=1
  shift
fi
if [[ $# -lt 1 || ( $signing == 0 && $# -lt 2 ) || ${1:-} == -* ]]; then
  usage
fi
out=$1
shift
command -v openssl >/dev/null || { echo "openssl is not installed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
days=${TLS_DAYS:-825}
if [[ $# -gt 0 ]]; then
  san="DNS:localhost,IP:127.0.0.1"
  for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
  done
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" -subj "/CN=qwen3-batch broker CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" -keyout "$out/redis.key" -out "$out/redis.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > "$out/redis.ext"
  openssl x509 -req -in "$out/redis.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial -days "$days" \
    -extfile "$out/redis.ext" -out "$out/redis.crt" 2>/dev/null
  rm -f "$out/redis.csr" "$out/redis.ext" "$out/ca.srl"
  chmod 600 "$out/ca.key" "$out/redis.key"
  echo "wrote $out/ca.crt, $out/redis.crt, $out/redis.key for $san"
  echo "the redis image runs as uid 999: on the broker host, chown 999 $out/redis.key before docker compose up"
fi
if [[ $signing == 1 ]]; then
  # Celery names a certificate by issuer + serial number: openssl gives each one a random serial.
  openssl req -x509 -newkey rsa:3072 -nodes -days "$days" -subj "/CN=qwen3-batch message signing" \
    -keyout "$out/signing.key" -out "$out/signing.crt" 2>/dev/null
  chmod 600 "$out/signing.key"
  mkdir -p "$out/signing-certs"
  cp "$out/signing.crt" "$out/signing-certs/signing.crt"
  echo "wrote $out/signing.key, $out/signing.crt and the cert store $out/signing-certs/ (valid $days days)"
  echo "the containers run as QWEN3B_USER: signing.key must be readable by that uid (chown it on each host)"
fi
