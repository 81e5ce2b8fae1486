#!/usr/bin/env bash
# Debian packages the test suite uses: real servers and clients for recorded traffic (nginx, curl),
# nghttp (HTTP/2 client), nghttpx (an h2c server accepting Upgrade: h2c), openssl (certificates), tcpdump to record, tshark/editcap as oracle and converter, iproute2 for network namespaces, chromium to
# render the HTML report in a real browser, wrk (the load of bench/record_large.py, which a test also runs).
# With the argument `bench` (`make bench`): also tcptrace (a peer timed by bench/run.py).
# Installs only what is missing; needs root (skips with a note otherwise: tests that need them then skip).
set -euo pipefail
need=()
if [ "${1:-}" = bench ]; then
  command -v tcptrace >/dev/null || need+=(tcptrace)
fi
command -v wrk >/dev/null || need+=(wrk)
command -v tshark >/dev/null || need+=(tshark)
command -v editcap >/dev/null || need+=(wireshark-common)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v nghttp >/dev/null || need+=(nghttp2-client)
command -v nghttpx >/dev/null || [ -x /usr/sbin/nghttpx ] || need+=(nghttp2-proxy)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: not root; missing ${need[*]} (what needs them will skip)" >&2
  exit 0
fi
echo "install-system-deps: installing ${need[*]}"
apt-get update -qq
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
