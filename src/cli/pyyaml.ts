/**
 * PyYAML's `yaml.dump(value)` (PyYAML 5.1 to 6.0.x, its defaults: the pure-Python Dumper, block style, keys sorted,
 * indent 2, width 80, allow_unicode=False) for a value JSON.parse gives, byte for byte: what Duffy v3's
 * `duffy client --format yaml` prints (duffy/client/formatter.py). The `yaml` npm package cannot be set to
 * PyYAML's choices (which strings it quotes, in which quotes, how it escapes non-ASCII characters, where it folds), so
 * this follows the rules of PyYAML's (MIT-licensed) representer, resolver and emitter for the values JSON has, nothing
 * more: no anchors (JSON values share nothing), no tags but the implicit ones, no block scalars (yaml.dump never
 * chooses them). test/unit/pyyaml.spec.ts holds it to PyYAML's own output.
 *
 * Numbers: Python's json.loads reads a number written without `.` or `e` as an int, anything else as a float, and
 * JSON.stringify writes a number without them exactly when it is an integer below 1e21; so an integer below 1e21
 * prints as Python's int (all its digits), anything else as Python's float repr, `1.0e+21`, `1.0e-07` as PyYAML
 * writes them. (A server writing `1.0` is read by JSON.parse as 1 and printed `1`, where v3 prints `1.0`.)
 */

const BEST_INDENT = 2;
const BEST_WIDTH = 80;
const BREAKS = '\n\x85\u2028\u2029';
const WHITESPACE = '\0 \t\r\n\x85\u2028\u2029';

type Scalar = { kind: 'scalar'; tag: string; value: string[]; implicit: [boolean, boolean] };
type YNode = Scalar | { kind: 'seq'; items: YNode[] } | { kind: 'map'; pairs: [YNode, YNode][] };

/** `yaml.dump(value)`. */
export function pyyamlDump(value: unknown): string {
  return new Emitter().dump(represent(value));
}

// ---- Representer (SafeRepresenter's str/int/float/bool/None/list/dict, keys sorted) and Resolver.

const STR = 'tag:yaml.org,2002:str';

function represent(v: unknown): YNode {
  if (v === null || v === undefined) return scalar('tag:yaml.org,2002:null', 'null');
  if (typeof v === 'boolean') return scalar('tag:yaml.org,2002:bool', v ? 'true' : 'false');
  if (typeof v === 'bigint') return scalar('tag:yaml.org,2002:int', v.toString());
  if (typeof v === 'number') {
    if (Number.isInteger(v) && Math.abs(v) < 1e21) return scalar('tag:yaml.org,2002:int', String(v)); // JSON's digits, as Python reads them
    return scalar('tag:yaml.org,2002:float', pyyamlFloat(v));
  }
  if (typeof v === 'string') return scalar(STR, v);
  if (Array.isArray(v)) return { kind: 'seq', items: v.map(represent) };
  if (typeof v === 'object') {
    // sorted(mapping.items()): str keys compare by code point (JS's sort compares UTF-16 units).
    const keys = Object.keys(v).sort(comparePython);
    return { kind: 'map', pairs: keys.map((k) => [scalar(STR, k), represent((v as Record<string, unknown>)[k])]) };
  }
  return scalar(STR, String(v));
}

function comparePython(a: string, b: string): number {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** Python's `repr(float)` ('r' format: the shortest digits that read back, exponent form below 1e-4 or from 1e16). */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mantissa, e] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const exp = Number(e);
  const decpt = exp + 1;
  if (decpt <= -4 || decpt > 16) {
    const abs = Math.abs(exp);
    return `${sign}${digits[0]}${digits.length > 1 ? `.${digits.slice(1)}` : ''}e${exp < 0 ? '-' : '+'}${abs < 10 ? '0' : ''}${abs}`;
  }
  if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
  if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}

/** SafeRepresenter.represent_float. */
function pyyamlFloat(x: number): string {
  if (Number.isNaN(x)) return '.nan';
  if (!Number.isFinite(x)) return x > 0 ? '.inf' : '-.inf';
  const value = pythonFloatRepr(x).toLowerCase();
  return !value.includes('.') && value.includes('e') ? value.replace('e', '.0e') : value;
}

/** Resolver's implicit resolvers, by first character, as PyYAML registers them (re.X patterns, spaces dropped). */
const RESOLVERS: [string, RegExp, string][] = [
  ['tag:yaml.org,2002:bool', /^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$/, 'yYnNtTfFoO'],
  [
    'tag:yaml.org,2002:float',
    /^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/,
    '-+0123456789.',
  ],
  ['tag:yaml.org,2002:int', /^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$/, '-+0123456789'],
  ['tag:yaml.org,2002:merge', /^(?:<<)$/, '<'],
  ['tag:yaml.org,2002:null', /^(?:~|null|Null|NULL|)$/, '~nN'],
  [
    'tag:yaml.org,2002:timestamp',
    /^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$/,
    '0123456789',
  ],
  ['tag:yaml.org,2002:value', /^(?:=)$/, '='],
  ['tag:yaml.org,2002:yaml', /^(?:!|&|\*)$/, '!&*'],
];

/** The tag a plain scalar reads as. Python's `$` also matches before a final newline: "true\n" reads as a bool. */
function resolvePlain(value: string): string {
  for (const [tag, re, first] of RESOLVERS) {
    if (value === '' ? tag !== 'tag:yaml.org,2002:null' : !first.includes(value[0])) continue;
    if (re.test(value) || (value.endsWith('\n') && re.test(value.slice(0, -1)))) return tag;
  }
  return STR;
}

function scalar(tag: string, value: string): Scalar {
  // Serializer: implicit = (resolve(plain) == tag, resolve(non-plain) == tag); a quoted scalar always reads as a str.
  return { kind: 'scalar', tag, value: Array.from(value), implicit: [resolvePlain(value) === tag, tag === STR] };
}

// ---- Emitter.

type Analysis = {
  empty: boolean;
  multiline: boolean;
  allowFlowPlain: boolean;
  allowBlockPlain: boolean;
  allowSingleQuoted: boolean;
};

/** Emitter.analyze_scalar, over code points, allow_unicode=False. */
function analyzeScalar(s: string[]): Analysis {
  if (s.length === 0) return { empty: true, multiline: false, allowFlowPlain: false, allowBlockPlain: true, allowSingleQuoted: true };
  let blockIndicators = false;
  let flowIndicators = false;
  let lineBreaks = false;
  let specialCharacters = false;
  let leadingSpace = false;
  let leadingBreak = false;
  let trailingSpace = false;
  let trailingBreak = false;
  let breakSpace = false;
  let spaceBreak = false;
  const text = s.join('');
  if (text.startsWith('---') || text.startsWith('...')) blockIndicators = flowIndicators = true;
  let precededByWhitespace = true;
  let followedByWhitespace = s.length === 1 || WHITESPACE.includes(s[1]);
  let previousSpace = false;
  let previousBreak = false;
  for (let index = 0; index < s.length; ) {
    const ch = s[index];
    if (index === 0) {
      if ('#,[]{}&*!|>\'"%@`'.includes(ch)) flowIndicators = blockIndicators = true;
      if (ch === '?' || ch === ':') {
        flowIndicators = true;
        if (followedByWhitespace) blockIndicators = true;
      }
      if (ch === '-' && followedByWhitespace) flowIndicators = blockIndicators = true;
    } else {
      if (',?[]{}'.includes(ch)) flowIndicators = true;
      if (ch === ':') {
        flowIndicators = true;
        if (followedByWhitespace) blockIndicators = true;
      }
      if (ch === '#' && precededByWhitespace) flowIndicators = blockIndicators = true;
    }
    if (BREAKS.includes(ch)) lineBreaks = true;
    const c = ch.codePointAt(0)!;
    // Not '\n' or printable ASCII: with allow_unicode=False, every other character is special (needs double quotes).
    if (!(ch === '\n' || (c >= 0x20 && c <= 0x7e))) specialCharacters = true;
    if (ch === ' ') {
      if (index === 0) leadingSpace = true;
      if (index === s.length - 1) trailingSpace = true;
      if (previousBreak) breakSpace = true;
      previousSpace = true;
      previousBreak = false;
    } else if (BREAKS.includes(ch)) {
      if (index === 0) leadingBreak = true;
      if (index === s.length - 1) trailingBreak = true;
      if (previousSpace) spaceBreak = true;
      previousSpace = false;
      previousBreak = true;
    } else {
      previousSpace = previousBreak = false;
    }
    index += 1;
    precededByWhitespace = WHITESPACE.includes(ch);
    followedByWhitespace = index + 1 >= s.length || WHITESPACE.includes(s[index + 1]);
  }
  let allowFlowPlain = true;
  let allowBlockPlain = true;
  let allowSingleQuoted = true;
  if (leadingSpace || leadingBreak || trailingSpace || trailingBreak) allowFlowPlain = allowBlockPlain = false;
  if (breakSpace) allowFlowPlain = allowBlockPlain = allowSingleQuoted = false;
  if (spaceBreak || specialCharacters) allowFlowPlain = allowBlockPlain = allowSingleQuoted = false;
  if (lineBreaks) allowFlowPlain = allowBlockPlain = false;
  if (flowIndicators) allowFlowPlain = false;
  if (blockIndicators) allowBlockPlain = false;
  return { empty: false, multiline: lineBreaks, allowFlowPlain, allowBlockPlain, allowSingleQuoted };
}

const ESCAPE_REPLACEMENTS: Record<string, string> = {
  '\0': '0',
  '\x07': 'a',
  '\x08': 'b',
  '\x09': 't',
  '\x0A': 'n',
  '\x0B': 'v',
  '\x0C': 'f',
  '\x0D': 'r',
  '\x1B': 'e',
  '"': '"',
  '\\': '\\',
  '\x85': 'N',
  '\xA0': '_',
  '\u2028': 'L',
  '\u2029': 'P',
};

const hex = (c: number, width: number) => c.toString(16).toUpperCase().padStart(width, '0');

class Emitter {
  private out: string[] = [];
  private indents: (number | null)[] = [];
  private indent: number | null = null;
  private flowLevel = 0;
  private rootContext = false;
  private mappingContext = false;
  private simpleKeyContext = false;
  private column = 0;
  private whitespace = true;
  private indention = true;
  private openEnded = false;

  dump(root: YNode): string {
    // An implicit document (no `---`), its root node, the document end (a line break), then `...` after a root
    // plain scalar (open_ended).
    this.expectNode(root, { root: true });
    this.writeIndent();
    if (this.openEnded) {
      this.writeIndicator('...', true);
      this.writeIndent();
    }
    return this.out.join('');
  }

  private write(data: string, columns = Array.from(data).length): void {
    this.column += columns;
    this.out.push(data);
  }

  private increaseIndent(flow: boolean, indentless = false): void {
    this.indents.push(this.indent);
    if (this.indent === null) this.indent = flow ? BEST_INDENT : 0;
    else if (!indentless) this.indent += BEST_INDENT;
  }

  private popIndent(): void {
    this.indent = this.indents.pop() ?? null;
  }

  private expectNode(node: YNode, ctx: { root?: boolean; mapping?: boolean; simpleKey?: boolean }, analysis?: Analysis): void {
    this.rootContext = !!ctx.root;
    this.mappingContext = !!ctx.mapping;
    this.simpleKeyContext = !!ctx.simpleKey;
    if (node.kind === 'scalar') {
      const a = analysis ?? analyzeScalar(node.value);
      const style = this.chooseScalarStyle(node, a);
      // process_tag: a tag is written only when the style chosen would read as another type.
      if (!((style === '' && node.implicit[0]) || (style !== '' && node.implicit[1]))) {
        this.writeIndicator(`!!${node.tag.slice('tag:yaml.org,2002:'.length)}`, true);
      }
      this.increaseIndent(true);
      const split = !this.simpleKeyContext;
      if (style === '"') this.writeDoubleQuoted(node.value, split);
      else if (style === "'") this.writeSingleQuoted(node.value, split);
      else this.writePlain(node.value, split);
      this.popIndent();
    } else if (node.kind === 'seq') {
      // Only an empty sequence or mapping is written in flow style.
      if (this.flowLevel || node.items.length === 0) this.writeEmptyFlow('[', ']');
      else {
        const indentless = this.mappingContext && !this.indention;
        this.increaseIndent(false, indentless);
        for (const item of node.items) {
          this.writeIndent();
          this.writeIndicator('-', true, false, true);
          this.expectNode(item, {});
        }
        this.popIndent();
      }
    } else if (this.flowLevel || node.pairs.length === 0) {
      this.writeEmptyFlow('{', '}');
    } else {
      this.increaseIndent(false);
      for (const [key, value] of node.pairs) {
        this.writeIndent();
        const k = key as Scalar;
        const a = analyzeScalar(k.value);
        // check_simple_key: the prepared tag (`!!str`, 5 columns) counts, though never written.
        if (k.value.length + 5 < 128 && !a.empty && !a.multiline) {
          this.expectNode(k, { mapping: true, simpleKey: true }, a);
          this.writeIndicator(':', false);
          this.expectNode(value, { mapping: true });
        } else {
          this.writeIndicator('?', true, false, true);
          this.expectNode(k, { mapping: true }, a);
          this.writeIndent();
          this.writeIndicator(':', true, false, true);
          this.expectNode(value, { mapping: true });
        }
      }
      this.popIndent();
    }
  }

  private chooseScalarStyle(node: Scalar, a: Analysis): '' | "'" | '"' {
    if (node.implicit[0]) {
      if (!(this.simpleKeyContext && (a.empty || a.multiline)) && (this.flowLevel ? a.allowFlowPlain : a.allowBlockPlain)) return '';
    }
    if (a.allowSingleQuoted && !(this.simpleKeyContext && a.multiline)) return "'";
    return '"';
  }

  private writeEmptyFlow(open: string, close: string): void {
    this.writeIndicator(open, true, true);
    this.flowLevel += 1;
    this.increaseIndent(true);
    this.popIndent();
    this.flowLevel -= 1;
    this.writeIndicator(close, false);
  }

  private writeIndicator(indicator: string, needWhitespace: boolean, whitespace = false, indention = false): void {
    const data = this.whitespace || !needWhitespace ? indicator : ` ${indicator}`;
    this.whitespace = whitespace;
    this.indention = this.indention && indention;
    this.openEnded = false;
    this.write(data);
  }

  private writeIndent(): void {
    const indent = this.indent ?? 0;
    if (!this.indention || this.column > indent || (this.column === indent && !this.whitespace)) this.writeLineBreak();
    if (this.column < indent) {
      this.whitespace = true;
      this.write(' '.repeat(indent - this.column));
    }
  }

  private writeLineBreak(data = '\n'): void {
    this.whitespace = true;
    this.indention = true;
    this.out.push(data);
    this.column = 0;
  }

  /** The line breaks text[start:end] as write_single_quoted and write_plain write them. */
  private writeBreaks(text: string[], start: number, end: number): void {
    if (text[start] === '\n') this.writeLineBreak();
    for (const br of text.slice(start, end)) this.writeLineBreak(br);
    this.writeIndent();
  }

  private writeSingleQuoted(text: string[], split: boolean): void {
    this.writeIndicator("'", true);
    let spaces = false;
    let breaks = false;
    let start = 0;
    for (let end = 0; end <= text.length; end++) {
      const ch = end < text.length ? text[end] : null;
      if (spaces) {
        if (ch === null || ch !== ' ') {
          if (start + 1 === end && this.column > BEST_WIDTH && split && start !== 0 && end !== text.length) this.writeIndent();
          else this.write(text.slice(start, end).join(''), end - start);
          start = end;
        }
      } else if (breaks) {
        if (ch === null || !BREAKS.includes(ch)) {
          this.writeBreaks(text, start, end);
          start = end;
        }
      } else if (ch === null || ' \n\x85\u2028\u2029'.includes(ch) || ch === "'") {
        if (start < end) {
          this.write(text.slice(start, end).join(''), end - start);
          start = end;
        }
      }
      if (ch === "'") {
        this.write("''", 2);
        start = end + 1;
      }
      if (ch !== null) {
        spaces = ch === ' ';
        breaks = BREAKS.includes(ch);
      }
    }
    this.writeIndicator("'", false);
  }

  private writeDoubleQuoted(text: string[], split: boolean): void {
    this.writeIndicator('"', true);
    let start = 0;
    for (let end = 0; end <= text.length; end++) {
      const ch = end < text.length ? text[end] : null;
      const c = ch === null ? 0 : ch.codePointAt(0)!;
      if (ch === null || '"\\\x85\u2028\u2029\uFEFF'.includes(ch) || !(c >= 0x20 && c <= 0x7e)) {
        if (start < end) {
          this.write(text.slice(start, end).join(''), end - start);
          start = end;
        }
        if (ch !== null) {
          const data = ch in ESCAPE_REPLACEMENTS ? `\\${ESCAPE_REPLACEMENTS[ch]}` : c <= 0xff ? `\\x${hex(c, 2)}` : c <= 0xffff ? `\\u${hex(c, 4)}` : `\\U${hex(c, 8)}`;
          this.write(data);
          start = end + 1;
        }
      }
      if (end > 0 && end < text.length - 1 && (ch === ' ' || start >= end) && this.column + (end - start) > BEST_WIDTH && split) {
        const data = `${text.slice(start, end).join('')}\\`;
        if (start < end) start = end;
        this.write(data);
        this.writeIndent();
        this.whitespace = false;
        this.indention = false;
        if (text[start] === ' ') this.write('\\');
      }
    }
    this.writeIndicator('"', false);
  }

  private writePlain(text: string[], split: boolean): void {
    if (this.rootContext) this.openEnded = true;
    if (text.length === 0) return;
    if (!this.whitespace) this.write(' ');
    this.whitespace = false;
    this.indention = false;
    let spaces = false;
    let breaks = false;
    let start = 0;
    for (let end = 0; end <= text.length; end++) {
      const ch = end < text.length ? text[end] : null;
      if (spaces) {
        if (ch !== ' ') {
          if (start + 1 === end && this.column > BEST_WIDTH && split) {
            this.writeIndent();
            this.whitespace = false;
            this.indention = false;
          } else {
            this.write(text.slice(start, end).join(''), end - start);
          }
          start = end;
        }
      } else if (breaks) {
        if (ch === null || !BREAKS.includes(ch)) {
          this.writeBreaks(text, start, end);
          this.whitespace = false;
          this.indention = false;
          start = end;
        }
      } else if (ch === null || ' \n\x85\u2028\u2029'.includes(ch)) {
        this.write(text.slice(start, end).join(''), end - start);
        start = end;
      }
      if (ch !== null) {
        spaces = ch === ' ';
        breaks = BREAKS.includes(ch);
      }
    }
  }
}
