import { describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { ANSIBLE_DIR } from '../../src/adapters/ansible-runner.js';

describe('playbooks', () => {
  it('pass ansible-playbook --syntax-check for the baremetal, vm and local drivers', async () => {
    const r = await execa('bash', ['tests/syntax-check.sh'], { cwd: ANSIBLE_DIR, reject: false, all: true });
    expect(r.all).not.toMatch(/FAIL/);
    expect(r.exitCode).toBe(0);
  }, 120_000);

  it("pass the local driver's own checks, every action on two nodes (tests/local-e2e.py)", async () => {
    const r = await execa('python3', ['tests/local-e2e.py'], { cwd: ANSIBLE_DIR, reject: false, all: true });
    expect(r.all).not.toMatch(/FAIL/);
    expect(r.exitCode).toBe(0);
  }, 300_000);
});
