#!/usr/bin/env bash
# Installs the real servers (and the browser) the test suite uses, from Debian/Ubuntu packages, only when missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have redis-server || need+=(redis-server)
have slapd || need+=(slapd)
have ldapsearch || need+=(ldap-utils)
have freeradius || need+=(freeradius)
have radclient || need+=(freeradius-utils)
[ -e /usr/lib/freeradius/rlm_ldap.so ] || need+=(freeradius-ldap)
have xmlsec1 || need+=(xmlsec1)
have openssl || need+=(openssl)
# An independent TOTP implementation (RFC 6238) for the MFA tests.
have oathtool || need+=(oathtool)
# redis-cli, to create the Redis Cluster of the topology tests.
have redis-cli || need+=(redis-tools)
# pysaml2, a second SAML stack for the saml tests (Debian's python3).
/usr/bin/python3 -c 'import saml2' >/dev/null 2>&1 || need+=(python3-pysaml2)
# Debian's Chromium for the dashboard test (driven by playwright-core; never a downloaded browser).
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  echo "test servers: all installed"
  exit 0
fi
echo "test servers: installing ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start system services we do not use; the tests run their own instances.
for svc in slapd freeradius; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
echo "test servers: installed"
