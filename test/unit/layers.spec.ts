import { describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/layers', import.meta.url));
const depcruise = (cwd: string, ...paths: string[]) =>
  execa(`${ROOT}/node_modules/.bin/depcruise`, [...paths, '--config', `${ROOT}/.dependency-cruiser.cjs`, '--output-type', 'err'], { cwd, reject: false });

describe('the dependency rule', () => {
  it('holds for the code base', async () => {
    const r = await depcruise(ROOT, 'src', 'projections');
    expect(r.stdout + r.stderr).not.toMatch(/error/);
    expect(r.exitCode).toBe(0);
  });

  it('fails a domain file that imports Nest or the configuration', async () => {
    const r = await depcruise(FIXTURE, 'src');
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).toMatch(/domain-is-pure: src\/domain\/leaky\.ts → .*@nestjs\/common/);
    expect(r.stdout).toMatch(/domain-is-pure: src\/domain\/leaky\.ts → src\/config\/settings\.ts/);
  });
});
