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
    for name, data, pax in json.load(sys.stdin):
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.pax_headers = pax
        t.addfile(ti, io.BytesIO(data.encode()))
sys.stdout.buffer.write(b.getvalue())
`;
  const r = spawnSync('python3', ['-c', py], { input: JSON.stringify(members), maxBuffer: 1 << 26 });
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

  /** Raw archive bytes: `times` extended headers (pax 'x' or GNU long name 'L') with this body, then a file `f`. */
  function extendedHeader(type: 'x' | 'L', body: string, times = 1): Buffer {
    const py = `
import sys, tarfile
body = sys.stdin.buffer.read()
h = tarfile.TarInfo("././@LongLink" if sys.argv[1] == "L" else "././@PaxHeader"); h.type = sys.argv[1].encode(); h.size = len(body)
f = tarfile.TarInfo("f"); f.size = 1
pad = lambda n: b"\\0" * (-n % 512)
sys.stdout.buffer.write((h.tobuf(tarfile.USTAR_FORMAT) + body + pad(len(body))) * int(sys.argv[2]) + f.tobuf(tarfile.USTAR_FORMAT) + b"x" + pad(1) + b"\\0" * 1024)
`;
    const r = spawnSync('python3', ['-c', py, type, String(times)], { input: body, maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(r.stderr.toString());
    return r.stdout;
  }

  it('reads pax headers of 60,000 digits at once: python 3.11 tarfile searches each in quadratic time (4 s)', () => {
    const r = unpack(extendedHeader('x', '1'.repeat(60_000), 10), 10, 1_000_000, 2_000_000);
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(r.kept).toEqual([]);
    expect(r.note).toMatch(/the archive was unreadable after \d+ bytes \(.*pax.*\)/);
  });

  it('stops at an extended header past 64 KiB (a GNU long name of 1 MB was read whole into memory) but keeps honest long names', () => {
    const r = unpack(extendedHeader('L', 'n'.repeat(1 << 20)), 10, 1_000_000, 4_000_000);
    expect({ status: r.status, stderr: r.stderr, kept: r.kept }).toEqual({ status: 0, stderr: '', kept: [] });
    expect(r.note).toMatch(/unreadable after \d+ bytes \(.*extended header of 1048576 bytes.*\)/);
    // A name near PATH_MAX, its last component 255 digits (the most a digit run may be).
    const long = `${'d'.repeat(200)}/`.repeat(18) + '9'.repeat(255);
    // (18 directories: more than the default 10 files of these tests would allow)
    expect(unpack(extendedHeader('L', long), 100)).toMatchObject({ status: 0, note: '', kept: ['d'.repeat(200)] });
    expect(unpack(archive([['p', 'y', { path: long }]]), 100)).toMatchObject({ status: 0, note: '', kept: ['d'.repeat(200)] });
  });

  it('stops when the extended headers pass tar\'s overhead allowance (the bound less the bytes): each costs time to parse', () => {
    const headers = Array.from({ length: 10 }, (_, i): [string, string, Record<string, string>] => [`f${i}`, '', { comment: 'c'.repeat(5000) }]);
    const r = unpack(archive(headers), 100, 1_000_000, 1_030_000);
    expect(r).toMatchObject({ status: 0, stderr: '' });
    expect(r.kept).toEqual(['f0', 'f1', 'f2', 'f3', 'f4']);
    expect(r.note).toMatch(/unreadable after \d+ bytes \(extended headers past tar's overhead allowance/);
  });

  it('stops at a run of extended headers before one member: tarfile reads them recursively (RecursionError at ~330)', () => {
    const r = unpack(extendedHeader('x', '10 k=1234\n', 400));
    expect({ status: r.status, stderr: r.stderr, kept: r.kept }).toEqual({ status: 0, stderr: '', kept: [] });
    expect(r.note).toMatch(/unreadable after \d+ bytes \(more than 4 extended headers in a row\)/);
  });

  describe('a sparse member (GNU tar makes none without --sparse) ends the archive there', () => {
    const sparse10 = (map: string): [string, string, Record<string, string>] => ['s', map, { 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.realsize': '10' }];

    it('a pax 1.0 sparse map that claims more numbers than it has: tarfile raised ValueError, the run failed', () => {
      const r = unpack(archive([['ok', 'x', {}], sparse10('1000000000\n0\n5\n')]));
      expect({ status: r.status, stderr: r.stderr, kept: r.kept }).toEqual({ status: 0, stderr: '', kept: ['ok'] });
      expect(r.note).toMatch(/unreadable after \d+ bytes \(a sparse file/);
    });

    it('an old GNU sparse header whose extension blocks never come: tarfile raised IndexError', () => {
      const py = `
import sys, tarfile
ok = tarfile.TarInfo("ok"); ok.size = 1
h = bytearray(tarfile.TarInfo("s").tobuf(tarfile.GNU_FORMAT)); h[156] = ord("S"); h[482] = 1
h[148:156] = b" " * 8; h[148:156] = b"%06o\\0 " % sum(h)
sys.stdout.buffer.write(ok.tobuf(tarfile.GNU_FORMAT) + b"x" + b"\\0" * 511 + bytes(h))
`;
      const r = unpack(spawnSync('python3', ['-c', py]).stdout);
      expect({ status: r.status, stderr: r.stderr, kept: r.kept }).toEqual({ status: 0, stderr: '', kept: ['ok'] });
      expect(r.note).toMatch(/unreadable after \d+ bytes \(a sparse file/);
    });

    it('a sparse map of 2 million numbers in 4 MB: tarfile made a list of them all (48 bytes of memory a byte)', () => {
      const dir = mkdtempSync(join(tmpdir(), 'unpack-'));
      const r = spawnSync('bash', ['-c', 'ulimit -v 150000; exec python3 "$@"', 'bash', UNPACK, join(dir, 'd'), '10', '100000000', '120000000'], {
        input: archive([sparse10('2000000\n' + '1\n'.repeat(2_000_000))]),
        timeout: 60_000,
      });
      rmSync(dir, { recursive: true, force: true });
      expect({ status: r.status, stderr: r.stderr.toString() }).toEqual({ status: 0, stderr: '' });
      expect(r.stdout.toString()).toMatch(/unreadable after \d+ bytes \(a sparse file/);
    });
  });

  it('keeps no list of the members it has passed: a count bomb of 300,000 empty files runs in bounded memory', () => {
    const bomb = spawnSync('python3', ['-c', `
import sys, tarfile
h = tarfile.TarInfo("x" * 90).tobuf(tarfile.USTAR_FORMAT)
sys.stdout.buffer.write(h * 300000 + b"\\0" * 1024)
`], { maxBuffer: 1 << 28 }).stdout;
    const dir = mkdtempSync(join(tmpdir(), 'unpack-'));
    try {
      // 150 MB of address space: the list of 300,000 members alone took about 180 MB.
      const r = spawnSync('bash', ['-c', 'ulimit -v 150000; exec python3 "$@"', 'bash', UNPACK, join(dir, 'd'), '10000', '1000000000', '1000000000'], { input: bomb, timeout: 60_000 });
      expect({ status: r.status, stderr: r.stderr.toString() }).toEqual({ status: 0, stderr: '' });
      expect(r.stdout.toString()).toMatch(/^290000 file\(s\), 0 bytes, left out/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ends the archive at a negative size (a pax size of -511 moves no block): it took bytes off what was kept', () => {
    const r = unpack(archive([['neg', '', { size: '-511' }], ['big', 'B'.repeat(1400), {}]]));
    expect({ status: r.status, stderr: r.stderr, kept: r.kept }).toEqual({ status: 0, stderr: '', kept: [] });
    expect(r.note).toMatch(/unreadable after \d+ bytes \(a negative size\)/);
  });

  it('still keeps an honest archive whole, with no note', () => {
    const r = unpack(archive([['a/b', 'x', {}], ['c', 'yy', {}]]));
    expect(r).toMatchObject({ status: 0, note: '', kept: ['a', 'c'] });
  });
});
