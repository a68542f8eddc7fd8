import { run } from '../../src/cli/main.js';

/** The `duffy` CLI run in this process, as a user would: its output lines and exit code. */
export async function duffyCli(...args: string[]): Promise<{ lines: string[]; exitCode: number }> {
  const lines: string[] = [];
  process.exitCode = 0;
  const exitCode = await run(['node', 'duffy', ...args], (l) => lines.push(...l.split('\n')));
  process.exitCode = 0;
  return { lines, exitCode };
}
