/**
 * Text with its control characters (newlines, terminal escape sequences) written as JSON escapes: tables print what
 * tenants, admins and playbooks wrote, and such text must not forge or hide rows in the reader's terminal.
 */
export function printable(text: string): string {
  const short: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => short[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
