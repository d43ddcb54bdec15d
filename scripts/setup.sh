#!/usr/bin/env bash
# Installs the system packages Dialtone's build and tests need on a Debian machine, as root,
# and any packages named as arguments (scripts/postgres.sh adds the PostgreSQL server).
# Packages already present are left alone; nothing is installed when everything is there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config libopus-dev protobuf-compiler libprotobuf-dev
  sip-tester baresip kamailio kamailio-tls-modules
  tshark iproute2 sox espeak-ng openssl python3-yaml postgresql-client
  fontconfig fonts-dejavu-core pocketsphinx pocketsphinx-en-us
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages: ${missing[*]}; run as root (or install them) first" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
# Keep package installation from starting system services (kamailio would take UDP 5060):
# tests start their own peers on free loopback ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
