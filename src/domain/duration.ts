/**
 * Durations as Duffy v3 writes them: `2h`, `1d 12h`, `+30m`, `-1h`, `1w`, `90s`, `500ms`, case and spaces
 * ignored, or bare digits for seconds. Seconds (signed, possibly fractional through `ms`), or undefined for
 * anything else. `signed`: a sign is required (a relative `expires_at`).
 */
export function parseDuration(text: string, options: { signed?: boolean } = {}): number | undefined {
  const v = text.trim().toLowerCase();
  if (!options.signed && /^\d{1,10}$/.test(v)) return Number(v);
  const m = DURATION.exec(v);
  if (!m || v.replace(/^[+-]/, '').trim() === '' || (options.signed && !m[1])) return undefined;
  const [w, d, h, min, s, ms] = m.slice(2).map((x) => Number(x ?? 0));
  const seconds = w * 604_800 + d * 86_400 + h * 3_600 + min * 60 + s + ms / 1000;
  return m[1] === '-' ? -seconds : seconds;
}

const DURATION = /^([+-])?(?:\s*(\d{1,7})w)?(?:\s*(\d{1,7})d)?(?:\s*(\d{1,7})h)?(?:\s*(\d{1,7})m)?(?:\s*(\d{1,7})s)?(?:\s*(\d{1,10})ms)?$/;
