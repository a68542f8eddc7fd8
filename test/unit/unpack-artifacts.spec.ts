import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The artifacts unpacker on Duffy's host, fed archives a tampered machine (root there) could send: pax headers
// can say anything, which GNU tar's own headers cannot. Each archive is made by python's tarfile.
const UNPACK = join(process.cwd(), 'ansible/roles/duffy_common/files/unpack_artifacts.py');

/** An archive of [name, data, pax headers] members, written by python's tarfile (pax format). */
function archive(members: Array<[string, string, Record<string, string>]>): Buffer {
  const py = `
import io, json, sys, tarfile
b = io.BytesIO()
with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as t:
    for name, data, pax in json.loads(sys.argv[1]):
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.pax_headers = pax
        t.addfile(ti, io.BytesIO(data.encode()))
sys.stdout.buffer.write(b.getvalue())
`;
  const r = spawnSync('python3', ['-c', py, JSON.stringify(members)]);
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return r.stdout;
}

function unpack(input: Buffer, files = 10, bytes = 1000, bound = 100_000) {
  const dir = mkdtempSync(join(tmpdir(), 'unpack-'));
  try {
    const dest = join(dir, 'dest');
    // A hung unpacker is a failure too: killed after 20 s (it takes well under one).
    const r = spawnSync('python3', [UNPACK, dest, String(files), String(bytes), String(bound)], { input, timeout: 20_000 });
    return { status: r.status, signal: r.signal, note: r.stdout.toString().trim(), stderr: r.stderr.toString(), kept: readdirSync(dest).sort() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the artifacts unpacker, fed a tampered archive', () => {
  it('leaves out a name with a NUL byte (a pax path) and keeps the rest: the run does not fail', () => {
    for (const path of ['a\u0000b', 'd\u0000e/f']) {
      const r = unpack(archive([['ok', 'x', {}], ['x', 'y', { path }], ['later', 'z', {}]]));
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      expect(r.kept).toEqual(['later', 'ok']);
      expect(r.note).toMatch(/^1 file\(s\), 1 bytes, left out/);
    }
  });

  it('stops at a member whose size (a pax size) runs past the bound, at once: it does not hang skipping it', () => {
    for (const size of ['9'.repeat(40), '1000000000000000']) {
      const r = unpack(archive([['ok', 'x', {}], ['x', 'y', { size }], ['z', 'q', {}]]));
      expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
      expect(r.kept).toEqual(['ok']);
      expect(r.note).toMatch(/the archive was cut at 100000 bytes/);
    }
  });

  it('still keeps an honest archive whole, with no note', () => {
    const r = unpack(archive([['a/b', 'x', {}], ['c', 'yy', {}]]));
    expect(r).toMatchObject({ status: 0, note: '', kept: ['a', 'c'] });
  });
});
