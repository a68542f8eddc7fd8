import { describe, expect, it } from '@jest/globals';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { clientErrorAnswer } from '../../src/main.js';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { idOf } from '../../src/domain/events.js';
import { IdParamsPipe, MAX_BODY_DEPTH, MAX_BODY_MEMBERS, checkJsonDepth, httpLogging, reviveJsonBody, isJsonBody, logSettings, redactUrl, refuseCrossSiteWrites, refuseUnreadBodies, requestLogging } from '../../src/http/input.js';

const depth = (text: string) => () => checkJsonDepth(undefined, undefined, Buffer.from(text));

/** The request log line's middleware, writing into `lines`. */
function loggedLines() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { lines, log: requestLogging(pino({ ...logSettings, level: 'info' }, sink)) };
}

describe('body depth check (on raw bytes, before parsing)', () => {
  it('lets 32 levels through and refuses 33 with a 422', () => {
    expect(depth('['.repeat(MAX_BODY_DEPTH) + ']'.repeat(MAX_BODY_DEPTH))).not.toThrow();
    expect(depth('{"a":'.repeat(MAX_BODY_DEPTH) + '1' + '}'.repeat(MAX_BODY_DEPTH))).not.toThrow();
    expect(depth('['.repeat(MAX_BODY_DEPTH + 1))).toThrow(expect.objectContaining({ status: 422, message: 'request body nested deeper than 32 levels' }));
  });

  it(`lets ${MAX_BODY_MEMBERS} members through in all and refuses more, commas inside strings not counted`, () => {
    const list = (n: number) => `[${Array(n).fill('1').join(',')}]`;
    expect(depth(list(MAX_BODY_MEMBERS))).not.toThrow();
    expect(depth(list(MAX_BODY_MEMBERS + 1))).toThrow(expect.objectContaining({ status: 422, message: `request body has more than ${MAX_BODY_MEMBERS} members (fields and array elements, in all)` }));
    expect(depth(`{"a": ${list(1200)}, "b": {"c": ${list(1200)}}}`)).toThrow();
    expect(depth(`[${Array(MAX_BODY_MEMBERS).fill('{}').join(',')}]`)).not.toThrow();
    expect(depth(JSON.stringify({ a: ','.repeat(100_000) }))).not.toThrow();
  });

  it('ignores brackets inside strings, escaped quotes included', () => {
    expect(depth(JSON.stringify({ a: '['.repeat(100), b: '\\"[[[[' + '{'.repeat(100) }))).not.toThrow();
    expect(depth(`{"a": "\\"", "b": ${'['.repeat(40)}`)).toThrow();
  });

  it('refuses bytes that are no UTF-8 with a 400, where they were read as U+FFFD (a Latin-1 "café" was stored as "caf\\ufffd")', () => {
    const comment = (...bytes: number[]) => () => checkJsonDepth(undefined, undefined, Buffer.concat([Buffer.from('{"comment": "caf'), Buffer.from(bytes), Buffer.from('"}')]));
    const refused = expect.objectContaining({ status: 400, message: expect.stringMatching(/^malformed JSON body: not valid UTF-8/) });
    expect(comment(0xe9)).toThrow(refused);
    expect(comment(0xed, 0xa0, 0x80)).toThrow(refused); // a surrogate written as UTF-8 (CESU-8)
    expect(comment(0xc0, 0xaf)).toThrow(refused); // an overlong '/'
    expect(comment(0xc3, 0xa9)).not.toThrow();
    expect(comment(0xf0, 0x9f, 0x98, 0x80)).not.toThrow();
    expect(depth('\ufeff{"a": "\ufffd"}')).not.toThrow();
  });

  it('is linear: 1 MB of brackets is refused at once', () => {
    const t = Date.now();
    expect(depth('['.repeat(1_000_000))).toThrow();
    expect(Date.now() - t).toBeLessThan(500);
  });
});

describe('null members are "not given"', () => {
  const parse = (text: string) => JSON.parse(text, reviveJsonBody);
  /** The body pipe's answer to `text`: its refusal's message, or 'taken'. */
  const refusal = (text: string) => {
    try {
      new IdParamsPipe().transform(parse(text), { type: 'body' });
      return 'taken';
    } catch (err) {
      return (err as Error).message;
    }
  };
  it('drops null members at any depth, keeps null list elements', () => {
    expect(parse('{"active": false, "expires_at": null}')).toEqual({ active: false });
    expect(parse('{"tenant_id": null, "nodes_specs": [{"quantity": 1, "pool": "p", "arch": null}, null]}')).toEqual({ nodes_specs: [{ quantity: 1, pool: 'p' }, null] });
    expect(parse('null')).toBeUndefined();
  });
  it('marks a number beyond a double for the body pipe to refuse, by its path (it parses as Infinity, which the ledger would store as null under a hash of Infinity)', () => {
    expect(refusal('{"data": {"x": 1e999}}')).toBe('data.x: not a finite number (it reads as Infinity): numbers must be finite');
    expect(refusal('{"data": {"list": [1, -1e400]}}')).toBe('data.list[1]: not a finite number (it reads as -Infinity): numbers must be finite');
    expect(refusal('{"x": 1e308, "y": 1e-400}')).toBe('taken');
  });
  it('marks a member name holding a NUL character (BSON field names cannot: MongoDB read models could never store it)', () => {
    expect(refusal('{"data": {"a\\u0000b": 1}}')).toBe('data.a\\u0000b: a member name must not hold a NUL character (\\u0000)');
    expect(refusal('{"hardware": {"k\\u0000": 1}}')).toMatch(/^hardware\.k.*NUL/);
    // A value may hold one: BSON strings carry their length.
    expect(refusal('{"data": {"a.b": "x\\u0000y", "$c": 1}}')).toBe('taken');
  });
  it('marks text holding a lone UTF-16 surrogate, as a name or a value at any depth (MongoDB would keep U+FFFD, Ansible fails on it)', () => {
    const problem = 'not valid Unicode text: it holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is no character';
    expect(refusal('{"ssh_key": "ssh-ed25519 AAAA\\ud800 x@y"}')).toBe(`ssh_key: ${problem}`);
    expect(refusal('{"nodes_specs": [{"hardware": {"cpu_model": "\\udfffx"}}]}')).toBe(`nodes_specs[0].hardware.cpu_model: ${problem}`);
    expect(refusal('{"data": {"k\\ud800": 1}}')).toBe(`data.k\\ud800: ${problem}`);
    expect(refusal('{"data": {"list": ["ok", "\\ud83d"]}}')).toBe(`data.list[1]: ${problem}`);
    // A pair is one character (an emoji), and so is every other escape.
    expect(refusal('{"comment": "\\ud83d\\ude00 \\u202e \\u0000", "data": {"\\ud83d\\ude00": "é"}}')).toBe('taken');
  });
});

describe('ids', () => {
  it.each([['0', 0], ['1', 1], ['42', 42], ['999999999999999', 999999999999999]])('%s is an id', (id, n) => expect(idOf(id)).toBe(n));
  // As pydantic reads an int (Duffy v3's paths): a sign, spaces around, leading zeros (any number of them), `_` between digits, a fraction of zeros.
  it.each(['01', '+1', ' 1', '1 ', '1.0', '00000000000000001', '-0'])('%p is 1 (or 0)', (id) => expect(idOf(id)).toBe(id === '-0' ? 0 : 1));
  it.each(['0x10', '1e1', '0b1', '1.5', '-1', '1000000000000000', '', 'NaN', '1__0', '_1', '1.', '.1'])('%p is not', (id) => expect(idOf(id)).toBeUndefined());
  it.each([1, null, undefined, ['1']])('non-strings (%p) are not', (id) => expect(idOf(id)).toBeUndefined());
});

describe('logging: no credential in request logs', () => {
  it('masks the legacy key in urls', () => {
    expect(redactUrl('/Node/get?key=abc-123&ver=7')).toBe('/Node/get?key=[Redacted]&ver=7');
    expect(redactUrl('/Inventory?ver=7&KEY=abc#x')).toBe('/Inventory?ver=7&KEY=[Redacted]');
    expect(redactUrl('/x?monkey=1')).toBe('/x?monkey=1');
    expect(redactUrl('/Node/get%3Fkey=abc-123&ver=7')).toBe('/Node/get%3Fkey=[Redacted]&ver=7');
    expect(redactUrl('/Node/get%3fver=7&key=abc-123')).toBe('/Node/get%3fver=7&key=[Redacted]');
    // A `;` between pairs, as some clients write them (plain or encoded).
    expect(redactUrl('/Inventory?x=1;key=abc-123')).toBe('/Inventory?x=1;key=[Redacted]');
    expect(redactUrl('/Inventory?x=1%3Bkey=abc-123')).toBe('/Inventory?x=1%3Bkey=[Redacted]');
    // An encoded separator before the real one: every pair is looked at, whatever separates it.
    expect(redactUrl('/Node/get%3Ffoo?key=abc-123&ver=7')).toBe('/Node/get%3Ffoo?key=[Redacted]&ver=7');
    expect(redactUrl('/x%3fa=1?key=abc-123')).toBe('/x%3fa=1?key=[Redacted]');
    expect(redactUrl('/x?a=1%26key%3dabc-123')).toBe('/x?a=1%26key%3d[Redacted]');
    // The query parser decodes names: so does the redaction.
    expect(redactUrl('/Inventory?%6bey=abc-123')).toBe('/Inventory?%6bey=[Redacted]');
    expect(redactUrl('/Node/fail?k%65y=abc&ssid=9')).toBe('/Node/fail?k%65y=[Redacted]&ssid=9');
    expect(redactUrl('/Node/get?key[]=abc&api%5Fkey=def&%zz=1')).toBe('/Node/get?key[]=[Redacted]&api%5Fkey=[Redacted]&%zz=1');
    // Names the server would not take as the key, but that carry one all the same.
    for (const name of ['key+', 'key%20', '%20key', 'key%00', 'key%2ex', 'key[']) expect(redactUrl(`/Inventory?${name}=abc`)).toBe(`/Inventory?${name}=[Redacted]`);
    expect(redactUrl('/Inventory?x=1#&key=abc')).toBe('/Inventory?x=1#&key=[Redacted]');
  });

  it('the request log line logs neither the key nor the Basic credentials, on success and on a 5xx', async () => {
    const { lines, log } = loggedLines();
    const server = createServer((req, res) => {
      log(req, res, () => undefined);
      res.statusCode = req.url!.startsWith('/Node/done') ? 500 : req.url!.startsWith('/Node/fail') ? 503 : 200;
      res.end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      await fetch(`${url}/Node/get?key=11111111-2222-4333-8444-555555555555&ver=7&count=1`);
      await fetch(`${url}/Node/done?ssid=3&key=11111111-2222-4333-8444-555555555555`);
      await fetch(`${url}/api/v1/sessions`, { headers: { authorization: 'Basic YWxpY2U6c2VjcmV0LWtleQ==' } });
      await fetch(`${url}/Node/fail?ssid=3`);
    } finally {
      server.close();
    }
    const out = lines.join('');
    expect(lines.length).toBeGreaterThanOrEqual(3);
    expect(out).toContain('[Redacted]');
    expect(out).toContain('/Node/get?key=[Redacted]&ver=7&count=1');
    expect(out).not.toContain('11111111-2222');
    expect(out).not.toContain('YWxpY2U6c2VjcmV0LWtleQ');
    // The line ops parse: request id, method, url, status, time; a 500 at error level, a 503 (a condition Duffy names) a warning.
    const parsed = lines.map((l) => JSON.parse(l));
    expect(parsed[0]).toMatchObject({ level: 30, msg: 'request completed', req: { method: 'GET', url: '/Node/get?key=[Redacted]&ver=7&count=1' }, res: { statusCode: 200 } });
    expect(parsed[0].req.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof parsed[0].responseTime).toBe('number');
    expect(parsed[1]).toMatchObject({ level: 50, msg: 'request errored', res: { statusCode: 500 } });
    expect(parsed[3]).toMatchObject({ level: 40, msg: 'request refused for now', res: { statusCode: 503 } });
  });

  it('logs a request whose client went away before any answer as 499, not the 201 Nest set in advance', async () => {
    const { lines, log } = loggedLines();
    let closed!: () => void;
    const gone = new Promise<void>((r) => (closed = r));
    const server = createServer((req, res) => {
      log(req, res, () => undefined);
      res.statusCode = 201;
      res.once('close', () => setImmediate(closed));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const abort = new AbortController();
    const asked = fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/sessions`, { method: 'POST', signal: abort.signal }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    abort.abort();
    await asked;
    await gone;
    server.close();
    expect(JSON.parse(lines[0])).toMatchObject({ level: 40, msg: 'request aborted', res: { statusCode: 499 } });
  });

  it("logs a request answered 408 (a body sent too slowly) as 408, not as a 200 nobody sent", async () => {
    const { lines, log } = loggedLines();
    let closed!: () => void;
    const gone = new Promise<void>((r) => (closed = r));
    const server = createServer({ requestTimeout: 300, connectionsCheckingInterval: 50 }, (req, res) => {
      log(req, res, () => undefined);
      res.once('close', () => setImmediate(closed));
    });
    server.on('clientError', clientErrorAnswer(0.3));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const socket = connect((server.address() as AddressInfo).port, '127.0.0.1', () => socket.write('POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{'));
    let answer = '';
    socket.on('data', (d) => (answer += String(d))).on('error', () => undefined);
    await gone;
    socket.destroy();
    server.close();
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(lines[0])).toMatchObject({ level: 40, msg: 'request aborted', res: { statusCode: 408 } });
  });

  it('reports an answer given before any request was read whole (431), and not one given to a request under way (408)', async () => {
    const reported: number[] = [];
    const server = createServer({ requestTimeout: 300, connectionsCheckingInterval: 50 }, () => undefined);
    server.on('clientError', clientErrorAnswer(0.3, (status) => reported.push(status)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const send = (text: string) =>
      new Promise<string>((done) => {
        let got = '';
        const socket = connect((server.address() as AddressInfo).port, '127.0.0.1', () => socket.write(text));
        socket.on('data', (d) => (got += String(d))).on('close', () => done(got)).on('error', () => undefined);
      });
    expect(await send(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431 /);
    expect(await send('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{')).toMatch(/^HTTP\/1\.1 408 /);
    server.close();
    expect(reported).toEqual([431]);
  });
});

describe('cross-site writes', () => {
  /** The status refuseCrossSiteWrites answers (200: let through). */
  const status = (method: string, headers: Record<string, string>): number => {
    let code = 200;
    const res = { statusCode: 200, setHeader: () => undefined, end: function (this: { statusCode: number }) { code = this.statusCode; } };
    refuseCrossSiteWrites({ method, headers } as unknown as IncomingMessage, res as unknown as ServerResponse, () => undefined);
    return code;
  };

  it('refuses a write marked cross-site or same-site, lets same-origin, none and non-browser clients through', () => {
    expect(['cross-site', 'same-site', 'same-origin', 'none'].map((site) => status('POST', { 'sec-fetch-site': site, host: 'duffy:8080' }))).toEqual([403, 403, 200, 200]);
    expect(status('POST', { host: 'duffy:8080' })).toBe(200);
    expect(status('GET', { 'sec-fetch-site': 'cross-site', origin: 'http://evil.example' })).toBe(200);
  });

  it('over plain http (no Sec-Fetch-Site: browsers send it to https URLs only) refuses a write whose Origin is another host', () => {
    // <form method="post" action="http://duffy:8080/api/v1/stats/rebuild"> on http://evil.example.
    expect(status('POST', { host: 'duffy:8080', origin: 'http://evil.example' })).toBe(403);
    expect(status('PUT', { host: 'duffy:8080', origin: 'null' })).toBe(403);
    expect(status('POST', { host: 'duffy:8080', origin: 'http://duffy:9090' })).toBe(403);
    // The ops page's own write, directly or behind a proxy that rewrites Host.
    expect(status('POST', { host: 'DUFFY:8080', origin: 'http://duffy:8080' })).toBe(200);
    expect(status('POST', { host: '127.0.0.1:8080', 'x-forwarded-host': 'duffy.example.org', origin: 'http://duffy.example.org' })).toBe(200);
    // RFC 7239's header, the first (browser-facing) proxy's element, quoted or not.
    expect(status('POST', { host: '127.0.0.1:8080', forwarded: 'for=192.0.2.1;proto=https;host=duffy.example.org, for=10.0.0.1', origin: 'https://duffy.example.org' })).toBe(200);
    expect(status('POST', { host: '127.0.0.1:8080', forwarded: 'for=192.0.2.1; host="duffy.example.org:8443"', origin: 'https://duffy.example.org:8443' })).toBe(200);
    expect(status('POST', { host: '127.0.0.1:8080', forwarded: 'for=192.0.2.1, host=duffy.example.org', origin: 'https://duffy.example.org' })).toBe(403);
    expect(status('POST', { host: '127.0.0.1:8080', forwarded: 'for=192.0.2.1;host=evil.example', origin: 'http://duffy.example.org' })).toBe(403);
    // A proxy that names the default port (nginx's `$host:$server_port`), an IPv6 address: the same host.
    expect(status('POST', { host: '127.0.0.1:8080', 'x-forwarded-host': 'duffy.example.org:80', origin: 'http://duffy.example.org' })).toBe(200);
    expect(status('POST', { host: 'duffy.example.org:443', origin: 'https://duffy.example.org' })).toBe(200);
    expect(status('POST', { host: '[2001:db8::1]:8080', origin: 'http://[2001:db8::1]:8080' })).toBe(200);
    // The default port of another scheme is another port.
    expect(status('POST', { host: 'duffy.example.org:80', origin: 'https://duffy.example.org' })).toBe(403);
    expect(status('POST', { host: 'duffy.example.org', origin: 'http://duffy.example.org:8080' })).toBe(403);
  });
});

describe('which bodies are JSON', () => {
  const json = (headers: Record<string, string>) => isJsonBody({ headers } as unknown as IncomingMessage);

  it('JSON types and a typeless body from a client that is not a browser; not a typeless body that carries an Origin, nor other types', () => {
    expect([json({ 'content-type': 'application/json; charset=utf-8' }), json({ 'content-type': 'Application/Vnd.Duffy+JSON' }), json({})]).toEqual([true, true, true]);
    // The compat e2e test of a typeless cross-site body is answered 403 by refuseCrossSiteWrites before this is asked.
    expect([json({ origin: 'http://duffy:8080' }), json({ 'content-type': '' }), json({ 'content-type': 'text/plain' })]).toEqual([false, false, false]);
  });
});

describe('a write whose body is not read as JSON', () => {
  const answer = (method: string, headers: Record<string, string>) => {
    const res = { statusCode: 200, body: '', setHeader() {}, end(text: string) { this.body = text; } };
    let passed = false;
    refuseUnreadBodies({ method, headers } as unknown as IncomingMessage, res as unknown as ServerResponse, () => (passed = true));
    return passed ? 'next' : `${res.statusCode} ${res.body}`;
  };

  it('is a 422 naming the type (a form PUT {"active": false} was ignored: 200, the session left running)', () => {
    expect(answer('PUT', { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '17' })).toBe(
      '422 {"detail":"the body was not read: send it as JSON with Content-Type: application/json (got Content-Type application/x-www-form-urlencoded)"}',
    );
    expect(answer('POST', { 'content-type': '', 'transfer-encoding': 'chunked' })).toMatch(/^422 .*\(empty\)/);
    expect(answer('POST', { origin: 'http://duffy:8080', 'content-length': '2' })).toMatch(/^422 .*no Content-Type/);
  });

  it('passes JSON, typeless bodies of clients that are not browsers, empty bodies and reads', () => {
    expect([
      answer('PUT', { 'content-type': 'application/json', 'content-length': '17' }),
      answer('POST', { 'content-length': '17' }),
      answer('POST', { 'content-type': 'text/plain', 'content-length': '0' }),
      answer('POST', { 'content-type': 'text/plain' }),
      answer('GET', { 'content-type': 'text/plain', 'content-length': '3' }),
    ]).toEqual(['next', 'next', 'next', 'next', 'next']);
  });
});

describe("Nest's own start-up lines", () => {
  const logged = (level: string) => {
    const lines: Array<{ level: number; msg: string }> = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)) as { level: number; msg: string });
        done();
      },
    });
    const log = pino({ ...httpLogging, level }, sink);
    log.info({ context: 'NestApplication' }, 'Nest application successfully started');
    log.info({ context: 'RouterExplorer' }, 'Mapped {/api/v1/sessions, POST} route');
    log.info({ context: 'Duffy' }, 'listening on :8080');
    return lines.map((l) => [l.level, l.msg]);
  };

  it('keeps "successfully started" (said before Duffy\'s own start-up ran) and the wiring at debug; Duffy\'s own lines at info', () => {
    expect(logged('info')).toEqual([[30, 'listening on :8080']]);
    expect(logged('debug')).toEqual([[20, 'Nest application successfully started'], [20, 'Mapped {/api/v1/sessions, POST} route'], [30, 'listening on :8080']]);
  });
});
