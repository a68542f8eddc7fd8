/**
 * A text table: the first column (and those in `left`) left-aligned, the others right-aligned; no trailing spaces.
 * In the domain because the simulator's reports (pure) print with it; the CLI uses it too.
 */
export function formatTable(headers: string[], rows: string[][], left: readonly number[] = []): string {
  // A loop, not Math.max(...rows): an audit table of a few hundred thousand rows overflowed the stack with the spread.
  const widths = headers.map((h) => h.length);
  for (const r of rows) for (let i = 0; i < widths.length; i++) if (r[i].length > widths[i]) widths[i] = r[i].length;
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || left.includes(i) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
