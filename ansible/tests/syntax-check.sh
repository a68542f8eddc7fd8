#!/bin/sh
# Syntax-check every playbook with each driver's sample input, plus the
# tests/syntax/ playbooks that import each role's task files statically.
# Exits non-zero if any check fails.
set -u
cd "$(dirname "$0")/.." || exit 1
export ANSIBLE_CONFIG="$PWD/ansible.cfg"

failed=0
check() {
    if out=$(ansible-playbook --syntax-check -i localhost, "$@" 2>&1); then
        echo "ok    $*"
    else
        echo "FAIL  $*"; echo "$out" | sed 's/^/      /'
        failed=1
    fi
}

for driver in local baremetal vm; do
    for pb in playbooks/*.yml; do
        check "$pb" -e "@tests/samples/$driver.json"
    done
done
for pb in tests/syntax/*.yml; do
    check "$pb"
done
exit $failed
