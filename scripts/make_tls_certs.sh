#!/usr/bin/env bash
# A private CA and a server certificate for Redis over TLS (docker-compose.redis-tls.yml).
#
#   scripts/make_tls_certs.sh OUTDIR NAME [NAME...]
#
# NAMEs are what clients write as the host in QWEN3B_BROKER_URL (DNS names or IP addresses);
# localhost and 127.0.0.1 are always added. Writes OUTDIR/ca.crt (copy it to every host, point
# QWEN3B_BROKER_TLS_CA_FILE at it), OUTDIR/redis.crt and OUTDIR/redis.key (the broker host only).
# The CA key stays in OUTDIR/ca.key: keep it off the worker hosts. The tests use this script too.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 OUTDIR NAME [NAME...]" >&2
  exit 2
fi
out=$1
shift
command -v openssl >/dev/null || { echo "openssl is not installed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
san="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done
days=${TLS_DAYS:-825}
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
