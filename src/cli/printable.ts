/**
 * Text with its control characters (newlines, terminal escape sequences, bidirectional overrides and isolates) written
 * as JSON escapes: tables print what tenants, admins and playbooks wrote, and such text must not forge, hide or reorder
 * rows in the reader's terminal (one that applies bidi, as VTE does, shows "a\u202Egol.exe" as "aexe.log").
 */
export function printable(text: string): string {
  const short: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => short[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
