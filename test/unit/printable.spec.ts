import { describe, expect, it } from '@jest/globals';
import { printable } from '../../src/cli/printable.js';

describe('printable', () => {
  it('writes control characters as escapes and keeps other text', () => {
    expect(printable('a\tb\nc\x1b[2J\x7f\x85 é 😀')).toBe('a\\tb\\nc\\u001b[2J\\u007f\\u0085 é 😀');
  });

  it('writes bidirectional controls as escapes: a name the tested code chose must not reorder the rest of its row', () => {
    // "evil\u202Egol.exe" shows as "evilexe.log" in a terminal that applies bidi (VTE does).
    expect(printable('evil\u202egol.exe')).toBe('evil\\u202egol.exe');
    expect(printable('\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c')).toBe('\\u202a\\u202b\\u202c\\u202d\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c');
    // Line and paragraph separators end a line in some viewers.
    expect(printable('a\u2028b\u2029c')).toBe('a\\u2028b\\u2029c');
  });
});
