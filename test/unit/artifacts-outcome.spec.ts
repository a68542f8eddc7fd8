import { describe, expect, it } from '@jest/globals';
import { PoolConfig } from '../../src/config/config.js';
import type { PlaybookRun } from '../../src/domain/events.js';
import { ARTIFACT_NAMES_MAX, type Job, decideRunOutcome } from '../../src/domain/provisioning.decide.js';
import { AT, given, machine, startedSession } from '../support/given.js';

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
    // Collected, not named: the directory lists them; only what the limit kept out is "left out" (the tenant is told).
    expect([data.leftOut, data.unnamed]).toEqual(['a note', 10_000 - data.files.length]);
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

describe('a session whose collection did not bring every file', () => {
  const world = (data: { error: string | null; leftOut?: string; unnamed?: number }) =>
    given(
      ...startedSession(),
      ['machine-i1', { type: 'ArtifactsCollected', data: { machineId: 1, sessionId: 1, files: ['a.log'], ...data, run, at: AT } }],
    );
  const incomplete = (w: ReturnType<typeof world>) => w.sessions.get(1)?.artifactsIncomplete;

  it('given a collection that timed out, then the session says which machine and that only the files copied before are there', () => {
    expect(incomplete(world({ error: 'playbook timed out' }))).toEqual(['i1: collection failed (playbook timed out): only files copied before that are there']);
  });

  it('given files over the pool limit, then the session says what was left out; files only unnamed are no loss', () => {
    expect(incomplete(world({ error: null, leftOut: '3 file(s), 9 bytes, left out' }))).toEqual(['i1: 3 file(s), 9 bytes, left out']);
    expect(incomplete(world({ error: null, unnamed: 5 }))).toEqual([]);
  });

  it('given a ledger of a Duffy before `unnamed`, whose leftOut said files collected and not named, then that is no loss (an upgrade)', () => {
    const note = "1443 more file(s) collected, not named here (their names pass 524288 characters): the session's artifacts list them";
    expect(incomplete(world({ error: null, leftOut: note }))).toEqual([]);
    expect(incomplete(world({ error: null, leftOut: `3 file(s), 9 bytes, left out; ${note}` }))).toEqual(['i1: 3 file(s), 9 bytes, left out']);
  });
});
