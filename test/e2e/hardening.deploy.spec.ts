import { describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Issue 10 item 16: the deployment files work in a clean shell and build a lean, unprivileged image. */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLEAN = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };

describe('docker-compose.yml in a clean shell (no DUFFY_ADMIN_KEY)', () => {
  it('docker-compose config -q passes, and an empty admin key passes through (Duffy then creates one)', async () => {
    const quiet = await execa('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], { cwd: ROOT, reject: false, extendEnv: false, env: CLEAN });
    expect(quiet.stderr).toBe('');
    expect(quiet.exitCode).toBe(0);
    const full = await execa('docker-compose', ['-f', 'docker-compose.yml', 'config'], { cwd: ROOT, extendEnv: false, env: CLEAN });
    expect(full.stdout).toMatch(/DUFFY_ADMIN_KEY: ["']{2}/);
    const set = await execa('docker-compose', ['-f', 'docker-compose.yml', 'config'], { cwd: ROOT, extendEnv: false, env: { ...CLEAN, DUFFY_ADMIN_KEY: '00000000-0000-4000-8000-000000000009' } });
    expect(set.stdout).toContain('DUFFY_ADMIN_KEY: 00000000-0000-4000-8000-000000000009');
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const stages = text.split(/^FROM /m).slice(1);
  const runtime = stages[stages.length - 1];

  it('builds in stages on a current LTS Node image', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage).toMatch(/^node:(22|24)(\.\d+)*-(bookworm|trixie)-slim\b/);
  });

  it('ships production dependencies only, no compiler, and runs as a non-root user', () => {
    expect(text).toMatch(/npm (prune|ci) [^\n]*--omit=dev/);
    expect(runtime).not.toMatch(/npm (ci|install)/);
    expect(runtime).not.toMatch(/\bg\+\+|\bmake\b/);
    const user = /^USER (\S+)/m.exec(runtime)?.[1];
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(runtime.indexOf('USER ')).toBeLessThan(runtime.indexOf('CMD '));
  });

  it('copies only paths that exist in the repository', () => {
    for (const [, from] of text.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const path of from.split(/\s+/)) expect(existsSync(join(ROOT, path))).toBe(true);
    }
  });
});
