import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pyyamlDump, pythonFloatRepr } from '../../src/cli/pyyaml.js';

/**
 * `duffy client --format yaml` prints what Duffy v3's prints: PyYAML's `yaml.dump(response.json())`
 * (duffy/client/formatter.py). The table holds (JSON value, what PyYAML 6.0.3's yaml.dump printed for it) pairs:
 * hand-picked values for each of its emitter's rules, then generated ones (strings of indicators, YAML's special
 * words, quotes, line breaks, control and non-ASCII characters, long strings folded at 80 columns, long and multi-line
 * keys, numbers as JSON.stringify writes them, nesting). Where python3 has PyYAML, fresh values are compared with it too.
 */
const TABLE: [unknown, string][] = JSON.parse(readFileSync(new URL('../fixtures/pyyaml-dump.json', import.meta.url), 'utf8'));
const hasPyYaml = spawnSync('python3', ['-c', 'import yaml']).status === 0;

describe("PyYAML's yaml.dump, as Duffy v3's client prints --format yaml", () => {
  it('the answers a previous comparison with v3 found printed otherwise', () => {
    expect(pyyamlDump({ error: { detail: "can't reserve nodes: unknown pool nope" } })).toBe("error:\n  detail: 'can''t reserve nodes: unknown pool nope'\n");
    expect(pyyamlDump({ error: { detail: 'pool ünïcode not found' } })).toBe('error:\n  detail: "pool \\xFCn\\xEFcode not found"\n');
    expect(pyyamlDump({ d: 'a\n\nb' })).toBe("d: 'a\n\n\n  b'\n");
    expect(pyyamlDump({ a: '1e3', b: '=', c: '<<', n: 1, f: 1e21, g: 1e-7, h: 0.5 })).toBe("a: 1e3\nb: '='\nc: '<<'\nf: 1.0e+21\ng: 1.0e-07\nh: 0.5\nn: 1\n");
  });

  it(`prints each of the ${TABLE.length} values of the table as PyYAML did`, () => {
    const differ = TABLE.filter(([value, want]) => pyyamlDump(value) !== want).map(([value, want]) => ({ value, want, got: pyyamlDump(value) }));
    expect(differ.slice(0, 3)).toEqual([]);
  });

  it("Python's float repr", () => {
    const cases: [number, string][] = [[0, '0.0'], [-0, '-0.0'], [1, '1.0'], [1e16, '1e+16'], [1234567890123456.8, '1234567890123456.8'], [0.0001, '0.0001'], [0.00001, '1e-05'], [1.5e-7, '1.5e-07'], [5e-324, '5e-324'], [1.7976931348623157e308, '1.7976931348623157e+308'], [-2.5, '-2.5'], [1e21, '1e+21']];
    for (const [x, repr] of cases) expect(pythonFloatRepr(x)).toBe(repr);
  });

  if (!hasPyYaml) it.skip('SKIPPED: the comparison with PyYAML itself needs python3 with PyYAML (import yaml) on the PATH', () => undefined);
  else
    it('prints 300 generated values as the python3 on the PATH prints them', () => {
      const values = generate(20260312, 300);
      const py = spawnSync('python3', ['-c', 'import sys, json, yaml; json.dump([yaml.dump(v) for v in json.load(sys.stdin)], sys.stdout)'], {
        input: JSON.stringify(values),
        maxBuffer: 1 << 26,
      });
      expect(py.status).toBe(0);
      const want: string[] = JSON.parse(py.stdout.toString());
      // Python read the JSON text; so does the client: compare on the same parsed values.
      const read: unknown[] = JSON.parse(JSON.stringify(values));
      const differ = read.map((v, i) => ({ v, want: want[i], got: pyyamlDump(v) })).filter((d) => d.want !== d.got);
      expect(differ.slice(0, 3)).toEqual([]);
    });
});

/** Seeded random JSON values made of what PyYAML's emitter looks at. */
function generate(seed: number, count: number): unknown[] {
  let s = seed;
  const rnd = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];
  const atoms = [
    ...'ab \n\'"\\:#-?,[]{}&*!|>%@`~=\t\r\0\x07\x1b\x7f\x85\xa0üé\u2028\u2029\ufeff\ud800\udfff\uffff\ufffd',
    ...[': ', ' #', '- ', '? ', '<<', '😀', '\u{10ffff}', 'yes', 'No', 'on', 'OFF', 'true', 'null', 'Null', 'y', 'n', '1', '012', '0x1F', '0b101', '1_000', '1e3'],
    ...['1.5', '.5', '-.inf', '.NaN', '12:30:00', '2026-12-02', '2026-12-2 1:02:03', '2026-12-02T05:07:24.413Z', '---', '...', 'word', 'x'.repeat(30), '\n\n'],
  ];
  const str = (): string => {
    if (rnd() < 0.3) return pick(atoms);
    let t = '';
    const n = Math.floor(rnd() * (rnd() < 0.25 ? 60 : 6));
    for (let i = 0; i < n; i++) t += pick(atoms) + (rnd() < 0.5 ? ' ' : '');
    return t;
  };
  const num = () => pick([0, 1, -1, 1000, 2 ** 53, 123456789012345680000, 1e21, 1e22, 0.1, -2.5, 1e-7, 1e-5, 1e-4, 1234567890123456.7, 5e-324, Math.PI, rnd() * 1000, rnd() * 1e-6, -rnd() * 1e18, Math.floor(rnd() * 1e9)]);
  const value = (d: number): unknown => {
    const r = rnd();
    if (d > 3 || r < 0.45) return pick([str, str, num, () => true, () => false, () => null])();
    if (r < 0.7) return Array.from({ length: Math.floor(rnd() * 4) }, () => value(d + 1));
    const o: Record<string, unknown> = {};
    for (let i = Math.floor(rnd() * 5); i > 0; i--) o[rnd() < 0.7 ? str() : pick(['a', 'n', 'y', 'x'.repeat(122), 'x'.repeat(123), '😀'.repeat(62), 'Z', 'a b'])] = value(d + 1);
    return o;
  };
  return Array.from({ length: count }, (_, i) => (i % 5 === 0 ? str() : value(0)));
}
