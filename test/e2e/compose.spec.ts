import { describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('docker-compose.yml', () => {
  it('is accepted by docker-compose config -q (no engine needed)', async () => {
    const r = await execa('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], { cwd: ROOT, reject: false, env: { DUFFY_ADMIN_KEY: '00000000-0000-4000-8000-000000000001' } });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
  });

  it('runs KurrentDB 26.0+ (multi-stream appends), a MongoDB replica set and Duffy with health checks', async () => {
    const r = await execa('docker-compose', ['-f', 'docker-compose.yml', 'config'], { cwd: ROOT, env: { DUFFY_ADMIN_KEY: '00000000-0000-4000-8000-000000000001' } });
    // Not 25.1: out of support, and 25.1.0 could miscount a stream written by a multi-stream append.
    const [, major, minor] = /kurrentplatform\/kurrentdb:(\d+)\.(\d+)/.exec(r.stdout) ?? [];
    expect(Number(major) * 100 + Number(minor)).toBeGreaterThanOrEqual(2600);
    expect(r.stdout).toMatch(/--replSet/);
    // Healthy once the replica set has a primary, not as soon as it is initiated.
    expect(r.stdout).toMatch(/quit\(db\.hello\(\)\.isWritablePrimary \? 0 : 1\)/);
    expect(r.stdout).toMatch(/DUFFY_EVENTSTORE: kurrentdb:\/\/eventstore:2113/);
    expect(r.stdout).toMatch(/DUFFY_READMODELS: mongodb:\/\/mongo:27017/);
    expect(r.stdout.match(/healthcheck:/g)?.length).toBe(3);
    // Duffy is not PID 1: an init reaps what Ansible's ssh leaves behind.
    expect(r.stdout).toMatch(/^ {4}init: true$/m);
  });
});
