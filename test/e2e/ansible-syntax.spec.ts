import { describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { ANSIBLE_DIR } from '../../src/adapters/ansible-runner.js';

describe('playbooks', () => {
  it('pass ansible-playbook --syntax-check for the baremetal, vm and local drivers', async () => {
    const r = await execa('bash', ['tests/syntax-check.sh'], { cwd: ANSIBLE_DIR, reject: false, all: true });
    expect(r.all).not.toMatch(/FAIL/);
    expect(r.exitCode).toBe(0);
  }, 120_000);
});
