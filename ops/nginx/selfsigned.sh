#!/usr/bin/env bash
# Makes a self-signed TLS certificate for the edge, for a machine without a
# real one (development, tests). The certificate is its own CA: trust it in
# a client (curl --cacert, Go's RootCAs) instead of turning verification off.
#
#   ops/nginx/selfsigned.sh DIR [NAME...]
#
# writes DIR/tls.crt and DIR/tls.key (mode 0600) for the names given
# (default: localhost 127.0.0.1 ::1); each name that parses as an IP address
# becomes an IP subjectAltName, the others DNS names. Then, for the edge job:
#
#   nomad var put nomad/jobs/edge tls_cert=@DIR/tls.crt tls_key=@DIR/tls.key
set -euo pipefail

if [[ $# -lt 1 ]]; then
	echo "usage: $0 DIR [NAME...]" >&2
	exit 2
fi
dir=$1
shift
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
	names=(localhost 127.0.0.1 ::1)
fi

san=""
for n in "${names[@]}"; do
	if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
		san+="IP:$n,"
	else
		san+="DNS:$n,"
	fi
done
san=${san%,}

mkdir -p "$dir"
umask 077
# EC P-256: small and fast, and accepted by every current browser. 90 days,
# like the public CAs: nobody should come to rely on this one.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-days 90 -subj "/CN=${names[0]}" \
	-addext "subjectAltName=$san" \
	-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	-addext "keyUsage=critical,digitalSignature,keyCertSign" \
	-addext "extendedKeyUsage=serverAuth" \
	-keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
chmod 0644 "$dir/tls.crt"
echo "$dir/tls.crt"
