#!/usr/bin/env bash
# Installs the system tools that the tests and the demo use for real (no mocks):
#   gcc, gcc-arm-none-eabi, libnewlib-arm-none-eabi  compile the exported C detectors (host and Cortex-M4)
#   qemu-system-arm                                  run the Cortex-M build and count its work
#   nmap                                             scan a device's ports from outside
#   sslscan                                          an external TLS scanner against the fleet server
#   tmux                                             drive the local readout as a person would
#   iproute2                                         network namespaces and `ss`
#   haproxy                                          the L4 load balancer in front of several fleet nodes
#   libseccomp2                                      the kernel filter under the sandboxed application
#   chromium                                         the fleet dashboard's browser test (Playwright)
#   postgresql                                       the fleet's PostgreSQL store: tests start a
#                                                    throwaway cluster with its initdb/pg_ctl
#   openssl                                          `openssl s_server`/`s_time`: bench handshake's limit
#   lighttpd, lighttpd-mod-openssl                   third-party software assessed in the lab
#                                                    (tests/assess/test_third_party.py)
#   python3.11-venv                                  (if Debian's python3.11 is there) its venv module
# and the attack lab's tools (`tinyward lab`, docs/lab.md):
#   hydra, hping3, slowhttptest, dsniff (arpspoof)   attacks: brute force, SYN flood, slow HTTP, ARP MITM
#   tcpreplay (tcpreplay, tcprewrite), tcpdump       replay captured traffic; labelled captures
#   dnsmasq-base                                     the lab's own resolver (benign DNS chatter)
# Skips apt entirely when everything is already there, so a second run costs nothing.
set -euo pipefail
packages=(gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm nmap sslscan tmux iproute2 libseccomp2 chromium
          postgresql openssl lighttpd lighttpd-mod-openssl haproxy hydra hping3 slowhttptest dsniff tcpreplay tcpdump dnsmasq-base)
# The Makefile builds .venv on Debian's python3.11 when it is there; its venv module
# (ensurepip) comes in a package of its own.
if [ -x /usr/bin/python3.11 ]; then packages+=(python3.11-venv); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system tools: all present"
  exit 0
fi
echo "system tools: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# lighttpd is only ever run by the tests, inside a lab namespace: not as this host's service.
if command -v systemctl >/dev/null && systemctl is-enabled lighttpd >/dev/null 2>&1; then
  $SUDO systemctl disable --now lighttpd >/dev/null 2>&1 || true
fi
echo "system tools: installed"
