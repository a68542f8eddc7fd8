import { describe, expect, it } from '@jest/globals';
import { PoolConfig } from '../../src/config/config.js';
import type { PlaybookRun } from '../../src/domain/events.js';
import { ARTIFACT_NAMES_MAX, type Job, decideRunOutcome } from '../../src/domain/provisioning.decide.js';
import { AT, given, machine } from '../support/given.js';

// The names of the files a machine left go into the ledger (ArtifactsCollected) and the session in memory, for
// good: a tampered machine names its files, up to the pool's file count, each up to PATH_MAX.
const pool = Object.assign(new PoolConfig(), { name: 'metal-intel', type: 'baremetal', arch: 'x86_64', platform: 'intel' });
const job: Job = { pool: 'metal-intel', action: 'collect_artifacts', sessionId: 1, machineIds: [1] };
const run: PlaybookRun = { action: 'collect_artifacts', playbook: 'collect.yml', exitCode: 0, durationMs: 1, timedOut: false, tail: '' };
const collected = (files: string[], note?: string) => {
  const m = given(machine(1, 'i1', 'metal-intel')).machines.get(1)!;
  const event = decideRunOutcome(m, pool, job, { ok: true, ipaddr: null, files, note }, run, m.revision, AT).events[0];
  if (event.type !== 'ArtifactsCollected') throw new Error(event.type);
  return event.data;
};

describe('the artifacts a machine left, as the ledger records them', () => {
  it('names them all when their names fit', () => {
    const files = Array.from({ length: 10_000 }, (_, i) => `artifacts/1/i1/logs/job-${i}.log`);
    expect(collected(files)).toMatchObject({ files });
    expect(collected(files).leftOut).toBeUndefined();
  });

  it('names no more than ARTIFACT_NAMES_MAX characters of them: 10,000 names of 4,000 characters were 40 MB in one event', () => {
    const files = Array.from({ length: 10_000 }, (_, i) => `artifacts/1/i1/${String(i).padStart(4000, 'x')}`);
    const data = collected(files, 'a note');
    expect(JSON.stringify(data).length).toBeLessThan(ARTIFACT_NAMES_MAX + 10_000);
    expect(data.files).toEqual(files.slice(0, data.files.length));
    expect(data.leftOut).toBe(`a note; ${10_000 - data.files.length} more file(s) collected, not named here (their names pass ${ARTIFACT_NAMES_MAX} characters): the session's artifacts list them`);
  });

  it('shares that bound among the machines of one run, whose outcomes are one append (KurrentDB bounds an append: 1 MiB by default)', () => {
    const world = given(...[1, 2, 3, 4].map((id) => machine(id, `i${id}`, 'metal-intel')));
    const files = Array.from({ length: 10_000 }, (_, i) => `artifacts/1/host/${String(i).padStart(200, 'x')}`);
    const runOf4: Job = { ...job, machineIds: [1, 2, 3, 4] };
    const append = [1, 2, 3, 4].map((id) => {
      const m = world.machines.get(id)!;
      return decideRunOutcome(m, pool, runOf4, { ok: true, ipaddr: null, files }, run, m.revision, AT, 4);
    });
    expect(JSON.stringify(append).length).toBeLessThan(ARTIFACT_NAMES_MAX + 10_000);
    expect(JSON.stringify(append).length).toBeGreaterThan(ARTIFACT_NAMES_MAX * 0.9);
  });
});
