import { describe, expect, it } from '@jest/globals';
import { pyYamlDump } from '../../src/cli/pyyaml.js';

/**
 * `duffy client --format yaml` prints what Duffy v3's prints: PyYAML's yaml.dump. Each expected text below is what
 * PyYAML 6.0 printed for the same value (python3 -c 'import yaml; print(repr(yaml.dump(v)))').
 */
describe("PyYAML's yaml.dump for JSON values", () => {
  it('folds a long string past column 80 at the next space, as PyYAML does (a session served from another family)', () => {
    const v = { action: 'get', sessions: [{ data: { affinity: { platform: 'intel', reason: 'too few intel machines of the kind asked for were free: served from amd', served_from: ['amd'] } }, id: 6 }] };
    expect(pyYamlDump(v)).toBe(
      "action: get\nsessions:\n- data:\n    affinity:\n      platform: intel\n      reason: 'too few intel machines of the kind asked for were free: served from\n        amd'\n      served_from:\n      - amd\n  id: 6\n",
    );
  });

  it('quotes, escapes and nests as PyYAML does: implicit types, non-ASCII, tabs, line breaks, empty collections, sequences of sequences', () => {
    const v = {
      node: {
        comment: 'rack 4, '.repeat(14),
        data: { note: 'line one\nline two', tab: 'a\tb', u: 'café 😀', e: '', y: 'yes', n: [], m: {}, q: "it's: here", t: '2026-11-30T11:51:09.891Z', list: [[1, 2], { k: null }] },
        reusable: true,
      },
    };
    expect(pyYamlDump(v)).toBe(
      "node:\n  comment: 'rack 4, rack 4, rack 4, rack 4, rack 4, rack 4, rack 4, rack 4, rack 4,\n    rack 4, rack 4, rack 4, rack 4, rack 4, '\n  data:\n    e: ''\n    list:\n    - - 1\n      - 2\n    - k: null\n    m: {}\n    n: []\n    note: 'line one\n\n      line two'\n    q: 'it''s: here'\n    t: '2026-11-30T11:51:09.891Z'\n    tab: \"a\\tb\"\n    u: \"caf\\xE9 \\U0001F600\"\n    y: 'yes'\n  reusable: true\n",
    );
  });
});
