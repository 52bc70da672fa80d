#!/usr/bin/env bash
# Debian packages CI needs, installed only when missing (a CI machine that ran this before skips it):
# docker.io (dockerd 20.10, containerd, runc), debootstrap (the Python base image), prometheus (the
# real server and promtool, which tests/test_monitoring.py also uses), and chromium with chromium-driver
# (the try-it page's browser test; no browser can be downloaded here).
# Needs root and Debian bookworm's apt, as the project's machines have.
set -euo pipefail

packages=(docker.io debootstrap prometheus chromium chromium-driver)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
    echo "system packages: ${packages[*]} already installed"
    exit 0
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No recommends: prometheus would bring node-exporter and friends; nothing here uses them. Package
# scripts that would start services find no init system here and leave them stopped.
apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
echo "system packages: done"
