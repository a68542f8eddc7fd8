import nunjucks from 'nunjucks';

/** Duffy v3's metaclient renders its pool map and host names as Jinja templates: nunjucks is Jinja for JavaScript. */
const env = new nunjucks.Environment(null, { autoescape: false });
const compiled = new Map<string, nunjucks.Template>();

/** A text with `{{ ... }}` or `{% ... %}` in it; any other text is itself. */
export const isTemplate = (text: string) => /\{\{|\{%/.test(text);

/** Renders `source` with `vars` (a variable not given renders empty, so `default(...)` applies, as in Jinja). */
export function renderTemplate(source: string, vars: Record<string, string | undefined>): string {
  if (!isTemplate(source)) return source;
  let template = compiled.get(source);
  if (!template) compiled.set(source, (template = new nunjucks.Template(source, env, undefined, true)));
  return template.render(vars);
}

/** A rendering's error in one line (nunjucks spreads its messages over several). */
export const templateError = (err: unknown) => String((err as Error)?.message ?? err).replace(/\s+/g, ' ').trim();

/** Why `source` cannot be rendered (a syntax error, an unknown filter), tried with `sample`; undefined if it can. */
export function templateProblem(source: string, sample: Record<string, string | undefined>): string | undefined {
  try {
    renderTemplate(source, sample);
    return undefined;
  } catch (err) {
    return templateError(err);
  }
}
