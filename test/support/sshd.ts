import { execa } from 'execa';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

/**
 * A private sshd on 127.0.0.1 that lets this machine be a "real node" for the baremetal and vm roles: its own
 * config, host key and authorized_keys file (holding a key made here, standing for Duffy's), in the foreground,
 * killed by stop(). Its log (LogLevel INFO on stderr) says every login it accepted.
 */
export interface Sshd {
  port: number;
  user: string;
  dir: string;
  /** Duffy's private key: the only one the node accepts before any session key is added. */
  keyFile: string;
  /** The node's authorized_keys (sshd's AuthorizedKeysFile), so the roles' session keys decide who logs in. */
  authorizedKeys: string;
  /** ssh options for pool.vars.ssh_args: Duffy's key, no host key pinning, never a prompt. */
  sshArgs: string;
  log(): string;
  stop(): void;
}

const SSHD = '/usr/sbin/sshd';

/** Why a private sshd cannot run here, or undefined when it can. */
export function sshdMissing(): string | undefined {
  if (!existsSync(SSHD)) return `${SSHD} is not installed (Debian package openssh-server; scripts/setup.sh installs it)`;
  if (userInfo().uid !== 0) return 'sshd must run as root to let the roles log in as root (run the tests as root)';
  return undefined;
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A port in [from, to] nothing listens on now (for an sshd, or for a node nobody answers at). */
export async function freePort(from = 2200, to = 2299, skip: number[] = []): Promise<number> {
  for (let p = from; p <= to; p += 1) if (!skip.includes(p) && (await portFree(p))) return p;
  throw new Error(`no free port in ${from}-${to}`);
}

/** `extraConfig`: more sshd_config lines, e.g. `SetEnv PATH=...` for a node whose tools are not what they say. */
export async function startSshd(extraConfig: string[] = []): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), 'duffy-sshd-'));
  const keyFile = join(dir, 'duffy_key');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'duffy@test', '-f', join(dir, 'host_key')]);
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'duffy@test', '-f', keyFile]);
  const authorizedKeys = join(dir, 'authorized_keys');
  writeFileSync(authorizedKeys, readFileSync(`${keyFile}.pub`), { mode: 0o600 });
  // sshd refuses to start without its privilege separation directory (systemd makes it; a container has none).
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const port = await freePort();
    const config = join(dir, 'sshd_config');
    writeFileSync(
      config,
      [
        'ListenAddress 127.0.0.1',
        `Port ${port}`,
        `HostKey ${join(dir, 'host_key')}`,
        `AuthorizedKeysFile ${authorizedKeys}`,
        'PidFile none',
        'UsePAM no',
        // The temporary directory is world-writable (sticky): strict modes would refuse the keys file in it.
        'StrictModes no',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        // Ansible's fetch copies over sftp.
        'Subsystem sftp internal-sftp',
        'LogLevel INFO',
        ...extraConfig,
        '',
      ].join('\n'),
    );
    const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const up = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      const check = (): void => {
        if (log.includes('Server listening')) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      child.stderr!.on('data', check);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (up) {
      return {
        port,
        user: userInfo().username,
        dir,
        keyFile,
        authorizedKeys,
        sshArgs: `-i ${keyFile} -o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o BatchMode=yes`,
        log: () => log,
        stop: () => {
          // Its connection processes first: Ansible's ssh masters (ControlPersist) keep theirs open, with sshd's
          // stderr, for a minute after a run, and they run in sessions of their own.
          for (const pid of childrenOf(child.pid!)) killPid(pid);
          child.kill('SIGKILL');
          child.stderr!.destroy();
        },
      };
    }
    child.kill('SIGKILL');
    lastError = log.trim();
    // Another process took the port between the check and sshd's bind: try the next one.
    if (!/Address already in use/.test(lastError)) break;
  }
  throw new Error(`sshd did not start: ${lastError}`);
}

/** The processes whose parent is `ppid`, from /proc. */
function childrenOf(ppid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) pids.push(Number(name));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** Runs `command` on the node as `keyFile`'s owner would: exit code and output, never throws. */
export async function sshRun(sshd: Sshd, keyFile: string, command: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await execa(
    'ssh',
    ['-p', String(sshd.port), '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', 'BatchMode=yes', `${sshd.user}@127.0.0.1`, command],
    { reject: false, stdin: 'ignore', timeout: 30_000 },
  );
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}
