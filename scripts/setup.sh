#!/usr/bin/env bash
# Installs what Duffy needs on a Debian machine, idempotently: Ansible from Debian, then npm packages.
# `--tests`: also what only the test suites use (Chromium, sshd, libvirt's Python binding, docker-compose).
set -euo pipefail
tests=false; [ "${1:-}" = "--tests" ] && tests=true
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v ansible-playbook >/dev/null || need_apt+=(ansible-core)
# community.general (IPMI) and community.libvirt come with Debian's `ansible` collection bundle.
[ -d /usr/lib/python3/dist-packages/ansible_collections/community/general ] || need_apt+=(ansible)
# The README's examples pick ids out of answers with jq.
command -v jq >/dev/null || need_apt+=(jq)
if $tests; then
  # Debian's Chromium drives the ops page's browser test (playwright-core never downloads a browser of its own).
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  # The remote roles' ssh side runs against this machine through a private sshd (test/e2e/remote-roles.e2e.spec.ts).
  [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  # libvirt's Python binding: its test driver (no daemon) lets the vm role's health check reach its ssh probe there.
  [ -f /usr/lib/python3/dist-packages/libvirt.py ] || need_apt+=(python3-libvirt)
  # Validates docker-compose.yml without a Docker engine (the test suite runs `docker-compose config -q`).
  command -v docker-compose >/dev/null || need_apt+=(docker-compose)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  # No service a package brings is started (Debian's policy-rc.d): the tests start their own private sshd, and
  # installing them must not open port 22 on this machine.
  held=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d && held=true
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null || status=$?
  if $held; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  [ "$status" -eq 0 ] || exit "$status"
fi

# npm ci only when the lock file changed since the last install (it rebuilds better-sqlite3, ~90 s).
stamp=node_modules/.duffy-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
  cp package-lock.json "$stamp"
fi
