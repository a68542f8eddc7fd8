import { afterEach, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { type Server, type Socket, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));

/**
 * A Jenkins abort (SIGTERM) that lands as Duffy answers a `duffy request` (waiting in the queue or not): the 201 is on its way (here: its
 * headers and half its body are), the CLI has not read it whole yet. Duffy cannot tell (its answer was written), so
 * only the CLI can give the session back; before, it exited 143 at once and the session was held, by a job that was
 * gone, for its whole lease. A raw socket server plays Duffy, so the answer can be cut where a real one is in flight.
 */
describe('duffy request, aborted while its answer arrives', () => {
  let server: Server | undefined;
  afterEach(() => void server?.close());

  it.each([[['--wait', '60']], [[]]])('reads the answer on its way and gives the session back (exit 143), with %j', async (waiting: string[]) => {
    const session = { id: 42, active: true, expires_at: '2030-01-01T00:00:00.000Z', data: {}, nodes: [{ hostname: 'n1.lab', ipaddr: '10.0.0.1', pool: 'p', state: 'deployed' }] };
    const body = JSON.stringify({ action: 'post', session });
    const half = Math.floor(body.length / 2);
    const calls: string[] = [];
    let answering: () => void = () => undefined;
    const answerStarted = new Promise<void>((r) => (answering = r));
    server = createServer({ allowHalfOpen: true }, (socket: Socket) => {
      let got = '';
      socket.on('data', (c: Buffer) => {
        got += c.toString('latin1');
        const head = got.indexOf('\r\n\r\n');
        if (head < 0) return;
        const length = Number(/content-length: *(\d+)/i.exec(got.slice(0, head))?.[1] ?? 0);
        if (got.length < head + 4 + length) return;
        const line = got.slice(0, got.indexOf('\r\n'));
        calls.push(line);
        got = '';
        if (line.startsWith('POST /api/v1/sessions')) {
          socket.write(`HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, half)}`);
          answering();
          // The rest follows when the client closes its side (or after 3 s): the bytes Duffy had sent before it could know.
          let rest = false;
          const finish = () => {
            if (rest) return;
            rest = true;
            socket.end(body.slice(half));
          };
          socket.on('end', finish);
          setTimeout(finish, 3000).unref();
        } else {
          const answer = JSON.stringify({ action: 'put', session: { ...session, active: false } });
          socket.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(answer)}\r\nConnection: close\r\n\r\n${answer}`);
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server!.address() as { port: number }).port;
    const env = { PATH: process.env.PATH, HOME: '/nonexistent', DUFFY_URL: `http://127.0.0.1:${port}`, DUFFY_TENANT: 'jenkins', DUFFY_KEY: '6f1c1a4e-3c5b-4d7e-9a0b-1c2d3e4f5a6b' };
    const child = spawn(process.execPath, [CLI, '--json', 'request', '--pool', 'p', ...waiting], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await answerStarted;
    await sleep(300); // the headers and half the body are with the CLI
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    expect(calls).toEqual(['POST /api/v1/sessions HTTP/1.1', 'PUT /api/v1/sessions/42 HTTP/1.1']);
    expect(stderr).toBe('duffy: gave back session 42, served as the job stopped\n');
    expect(stdout).toBe('');
  }, 30_000);
});
