/**
 * PyYAML's `yaml.dump(value)` (block style, keys sorted, width 80, indent 2, ASCII only) for JSON values: what Duffy
 * v3's `duffy client --format yaml` prints. Its emitter's rules are followed step by step (yaml/emitter.py:
 * analyze_scalar, choose_scalar_style, write_plain, write_single_quoted, write_double_quoted, write_indent), so long
 * strings fold where PyYAML folds them: past column 80, at the next space, lines may end longer than 80.
 */
const WIDTH = 80;
const BREAKS = '\n\x85\u2028\u2029';
const SPACE_OR_BREAK = '\0 \t\r' + BREAKS;

/** YAML 1.1 scalars that PyYAML's resolver reads as another type than a string: such a string is quoted. */
const IMPLICIT = [
  /^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$/,
  /^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/,
  /^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$/,
  /^(?:<<)$/,
  /^(?:~|null|Null|NULL|)$/,
  /^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$/,
  /^(?:=)$/,
];

const ESCAPES: Record<string, string> = { '\0': '0', '\x07': 'a', '\x08': 'b', '\t': 't', '\n': 'n', '\x0B': 'v', '\x0C': 'f', '\r': 'r', '\x1B': 'e', '"': '"', '\\': '\\', '\x85': 'N', '\xA0': '_', '\u2028': 'L', '\u2029': 'P' };

type Analysis = { empty: boolean; multiline: boolean; flowPlain: boolean; blockPlain: boolean; singleQuoted: boolean };

/** analyze_scalar, on code points as Python sees them. */
function analyze(cs: string[]): Analysis {
  if (cs.length === 0) return { empty: true, multiline: false, flowPlain: false, blockPlain: true, singleQuoted: true };
  const text = cs.join('');
  let blockIndicators = text.startsWith('---') || text.startsWith('...');
  let flowIndicators = blockIndicators;
  let lineBreaks = false, special = false, leadingSpace = false, leadingBreak = false, trailingSpace = false, trailingBreak = false;
  let breakSpace = false, spaceBreak = false, previousSpace = false, previousBreak = false;
  let preceded = true;
  let followed = cs.length === 1 || SPACE_OR_BREAK.includes(cs[1]);
  for (let i = 0; i < cs.length; i++) {
    const ch = cs[i];
    if (i === 0) {
      if ('#,[]{}&*!|>\'"%@`'.includes(ch)) flowIndicators = blockIndicators = true;
      if ('?:'.includes(ch)) {
        flowIndicators = true;
        if (followed) blockIndicators = true;
      }
      if (ch === '-' && followed) flowIndicators = blockIndicators = true;
    } else {
      if (',?[]{}'.includes(ch)) flowIndicators = true;
      if (ch === ':') {
        flowIndicators = true;
        if (followed) blockIndicators = true;
      }
      if (ch === '#' && preceded) flowIndicators = blockIndicators = true;
    }
    if (BREAKS.includes(ch)) lineBreaks = true;
    // Not printable ASCII: with allow_unicode off, every other character is special (double-quoted, escaped).
    if (!(ch === '\n' || (ch >= ' ' && ch <= '~'))) special = true;
    if (ch === ' ') {
      if (i === 0) leadingSpace = true;
      if (i === cs.length - 1) trailingSpace = true;
      if (previousBreak) breakSpace = true;
      previousSpace = true;
      previousBreak = false;
    } else if (BREAKS.includes(ch)) {
      if (i === 0) leadingBreak = true;
      if (i === cs.length - 1) trailingBreak = true;
      if (previousSpace) spaceBreak = true;
      previousSpace = false;
      previousBreak = true;
    } else {
      previousSpace = previousBreak = false;
    }
    preceded = SPACE_OR_BREAK.includes(ch);
    followed = i + 2 >= cs.length || SPACE_OR_BREAK.includes(cs[i + 2]);
  }
  let flowPlain = true, blockPlain = true, singleQuoted = true;
  if (leadingSpace || leadingBreak || trailingSpace || trailingBreak) flowPlain = blockPlain = false;
  if (breakSpace) flowPlain = blockPlain = singleQuoted = false;
  if (spaceBreak || special) flowPlain = blockPlain = singleQuoted = false;
  if (lineBreaks) flowPlain = blockPlain = false;
  if (flowIndicators) flowPlain = false;
  if (blockIndicators) blockPlain = false;
  return { empty: false, multiline: lineBreaks, flowPlain, blockPlain, singleQuoted };
}

class Emitter {
  out = '';
  column = 0;
  whitespace = true;
  indention = true;
  indent = 0;
  flowLevel = 0;
  /** The root collection starts at column 0 (increase_indent from None). */
  private root = true;

  private write(data: string): void {
    this.out += data;
    this.column += [...data].length;
  }

  private lineBreak(data = '\n'): void {
    this.whitespace = this.indention = true;
    this.out += data;
    this.column = 0;
  }

  writeIndent(): void {
    if (!this.indention || this.column > this.indent || (this.column === this.indent && !this.whitespace)) this.lineBreak();
    if (this.column < this.indent) {
      this.whitespace = true;
      this.write(' '.repeat(this.indent - this.column));
    }
  }

  indicator(ind: string, needWhitespace: boolean, whitespace = false, indention = false): void {
    const data = this.whitespace || !needWhitespace ? ind : ' ' + ind;
    this.write(data);
    this.whitespace = whitespace;
    this.indention = this.indention && indention;
  }

  /** A node: `mapping` when it is a mapping's key or value (a sequence there is not indented), `simpleKey` for a key. */
  node(v: unknown, mapping: boolean, simpleKey = false): void {
    if (Array.isArray(v)) return v.length === 0 || this.flowLevel > 0 ? this.flow('[', ']', v) : this.blockSequence(v, mapping);
    if (v !== null && typeof v === 'object') {
      const entries = sortedEntries(v as Record<string, unknown>);
      return entries.length === 0 || this.flowLevel > 0 ? this.flow('{', '}', entries) : this.blockMapping(entries);
    }
    const saved = this.indent;
    this.indent += 2; // increase_indent(flow=True)
    this.scalar(v, simpleKey);
    this.indent = saved;
  }

  /** Only empty collections are written in flow style here (default_flow_style=False). */
  private flow(open: string, close: string, items: unknown[]): void {
    if (items.length > 0) throw new Error('non-empty flow collection');
    this.indicator(open, true, true);
    this.indicator(close, false);
  }

  private blockSequence(items: unknown[], mapping: boolean): void {
    const saved = this.indent;
    if (this.root) this.root = false;
    else if (!(mapping && !this.indention)) this.indent += 2;
    for (const item of items) {
      this.writeIndent();
      this.indicator('-', true, false, true);
      this.node(item, false);
    }
    this.indent = saved;
  }

  private blockMapping(entries: Array<[string, unknown]>): void {
    const saved = this.indent;
    if (this.root) this.root = false;
    else this.indent += 2;
    for (const [k, value] of entries) {
      this.writeIndent();
      const a = analyze([...k]);
      // check_simple_key: under 128 characters with the tag it counts, "!!str".
      if ([...k].length + 5 < 128 && !a.empty && !a.multiline) {
        this.node(k, true, true);
        this.indicator(':', false);
      } else {
        this.indicator('?', true, false, true);
        this.node(k, true);
        this.writeIndent();
        this.indicator(':', true, false, true);
      }
      this.node(value, true);
    }
    this.indent = saved;
  }

  private scalar(v: unknown, simpleKey: boolean): void {
    if (typeof v !== 'string') return this.plain(scalarText(v), false);
    const cs = [...v];
    const a = analyze(cs);
    const implicit = !IMPLICIT.some((re) => re.test(v));
    if (implicit && !(simpleKey && (a.empty || a.multiline)) && (this.flowLevel > 0 ? a.flowPlain : a.blockPlain)) return this.plain(v, !simpleKey);
    if (a.singleQuoted && !(simpleKey && a.multiline)) return this.singleQuoted(cs, !simpleKey);
    this.doubleQuoted(cs, !simpleKey);
  }

  private plain(text: string, split: boolean): void {
    if (text === '') return;
    if (!this.whitespace) this.write(' ');
    this.whitespace = this.indention = false;
    const cs = [...text];
    let spaces = false, start = 0;
    for (let end = 0; end <= cs.length; end++) {
      const ch = end < cs.length ? cs[end] : undefined;
      if (spaces) {
        if (ch !== ' ') {
          if (start + 1 === end && this.column > WIDTH && split) {
            this.writeIndent();
            this.whitespace = this.indention = false;
          } else this.write(cs.slice(start, end).join(''));
          start = end;
        }
      } else if (ch === undefined || ' \n\x85\u2028\u2029'.includes(ch)) {
        this.write(cs.slice(start, end).join(''));
        start = end;
      }
      if (ch !== undefined) spaces = ch === ' ';
    }
  }

  private singleQuoted(cs: string[], split: boolean): void {
    this.indicator("'", true);
    let spaces = false, breaks = false, start = 0;
    for (let end = 0; end <= cs.length; end++) {
      const ch = end < cs.length ? cs[end] : undefined;
      if (spaces) {
        if (ch !== ' ') {
          if (start + 1 === end && this.column > WIDTH && split && start !== 0 && end !== cs.length) this.writeIndent();
          else this.write(cs.slice(start, end).join(''));
          start = end;
        }
      } else if (breaks) {
        if (ch === undefined || !BREAKS.includes(ch)) {
          if (cs[start] === '\n') this.lineBreak();
          for (const br of cs.slice(start, end)) this.lineBreak(br);
          this.writeIndent();
          start = end;
        }
      } else if ((ch === undefined || ' \n\x85\u2028\u2029'.includes(ch) || ch === "'") && start < end) {
        this.write(cs.slice(start, end).join(''));
        start = end;
      }
      if (ch === "'") {
        this.write("''");
        start = end + 1;
      }
      if (ch !== undefined) {
        spaces = ch === ' ';
        breaks = BREAKS.includes(ch);
      }
    }
    this.indicator("'", false);
  }

  private doubleQuoted(cs: string[], split: boolean): void {
    this.indicator('"', true);
    let start = 0;
    for (let end = 0; end <= cs.length; end++) {
      const ch = end < cs.length ? cs[end] : undefined;
      if (ch === undefined || '"\\\x85\u2028\u2029\uFEFF'.includes(ch) || !(ch >= ' ' && ch <= '~')) {
        if (start < end) {
          this.write(cs.slice(start, end).join(''));
          start = end;
        }
        if (ch !== undefined) {
          const code = ch.codePointAt(0)!;
          const hex = (n: number) => code.toString(16).toUpperCase().padStart(n, '0');
          this.write(ch in ESCAPES ? '\\' + ESCAPES[ch] : code <= 0xff ? `\\x${hex(2)}` : code <= 0xffff ? `\\u${hex(4)}` : `\\U${hex(8)}`);
          start = end + 1;
        }
      }
      if (end > 0 && end < cs.length - 1 && (ch === ' ' || start >= end) && this.column + (end - start) > WIDTH && split) {
        this.write(cs.slice(start, end).join('') + '\\');
        if (start < end) start = end;
        this.writeIndent();
        this.whitespace = this.indention = false;
        if (cs[start] === ' ') this.write('\\');
      }
    }
    this.indicator('"', false);
  }
}

/** Python's sorted() on str keys: by code point. */
function sortedEntries(o: Record<string, unknown>): Array<[string, unknown]> {
  const cmp = (a: string, b: string) => {
    const [x, y] = [[...a], [...b]];
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    return x.length - y.length;
  };
  return Object.entries(o).sort(([a], [b]) => cmp(a, b));
}

/** null, booleans and numbers as PyYAML's representer writes None, bool, int and float. */
function scalarText(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return '.nan';
    if (!Number.isFinite(v)) return v > 0 ? '.inf' : '-.inf';
    const s = String(v).toLowerCase();
    return !s.includes('.') && s.includes('e') ? s.replace('e', '.0e') : s;
  }
  return String(v);
}

/** `yaml.dump(value)` for a JSON value (Duffy v3's answers are mappings), ending with a line break. */
export function pyYamlDump(value: unknown): string {
  const e = new Emitter();
  e.node(value, false);
  e.writeIndent();
  return e.out;
}
