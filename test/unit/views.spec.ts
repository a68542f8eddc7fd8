import { describe, expect, it } from '@jest/globals';
import { publicData, queuePosition } from '../../src/http/views.js';
import { AT, given, queuedRequest, tenant } from '../support/given.js';

describe('node data a tenant sees', () => {
  it('drops every key that names a credential, at any depth, and keeps the rest', () => {
    const data = {
      rack: 'r1',
      ipmi: { host: 'bmc.test', user: 'root', pass: 'p1', 'private-key': 'k', 'api-key': 'a', passphrase: 'pp', pwd: 'p2', auth: 'Bearer x', ssh_key: 's', root_pw: 'p3', pin: '1234', cert: 'c' },
      tokens: ['t'],
      list: [{ password: 'p4', slot: 3 }],
      keyboard: 'us',
      keystone_region: 'eu',
      more: { ipmiPass: 1, bmcPwd: 2, rootpw: 3, privkey: 4, id_rsa: 5, passcode: 6, wpa_psk: 7, jwt: 8, 'api.key': 9, signing_key: 10, encryption_key: 11, login: { key: 12 }, nested: [{ adminPass: 13 }], AUTHZ: 14 },
      caps: { IPMIPass: 1, BMCPass: 2, rootpass: 3, adminpass: 4, sshkey: 5, SSHKey: 6, IPMIKEY: 7 },
    };
    expect(publicData(data)).toEqual({ rack: 'r1', ipmi: { host: 'bmc.test', user: 'root' }, list: [{ slot: 3 }], keyboard: 'us', keystone_region: 'eu', more: { login: {}, nested: [{}] }, caps: {} });
  });

  it('drops keys spelled to slip past the patterns: look-alike characters, other scripts, other languages', () => {
    const data = {
      'p@ssword': 1, 'pa$$w0rd': 2, pword: 3, '\u0440assword': 4, Kennwort: 5, 'contrase\u00f1a': 6, mot_de_passe: 7, Passwort: 8,
      'p@ss': 11, pa$$: 12, ipmi_p4ss: 13, IPMI_P455: 14, k3y: 15, ssh_k3y: 16, pw0rd: 17, root_pw0rd: 18, t0k3n: 19, '4uth': 20, s3cr3t: 21, cr3d3nt1al: 22,
      creds: { u: 'root', p: 'x' }, root_pwhash: 23, snmp_community: 24, sessionid: 25, keytab: 26, kubeconfig: 27, lozinka: 28, signature: 29, hmac: 30, jelszo: 31, passord: 32,
      console_port: 9, slot4: 10, rack: 'r1',
    };
    expect(publicData(data)).toEqual({ console_port: 9, slot4: 10, rack: 'r1' });
  });
});

describe('fairness capacity', () => {
  it('counts the machines that can still serve: one retired by an admin or used up leaves it once', async () => {
    const { fairness } = await import('../../projections/fairness.projection.js');
    const { foldAll } = await import('../../projections/projection.js');
    const at = '2026-01-01T00:00:00.000Z';
    let position = 0n;
    const ev = (type: string, data: Record<string, unknown>) => ({ id: String(position), stream: 's', revision: 0, position: ++position, type, data: { ...data, at }, metadata: {} }) as never;
    const events = [
      ...[1, 2, 3].map((machineId) => ev('MachineRegistered', { machineId, hostname: `m${machineId}`, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' })),
      ev('MachineServiceChanged', { machineId: 1, hostname: 'm1', service: 'retired', reason: 'eol', actor: 'admin' }),
      ev('MachineRecycled', { machineId: 1, policy: 'reuse', state: 'done' }),
      ev('MachineServiceChanged', { machineId: 2, hostname: 'm2', service: 'maintenance', reason: 'disk', actor: 'admin' }),
    ];
    const { state } = foldAll(fairness, events);
    expect(fairness.doc(state, 'capacity', 'all')).toMatchObject({ machines: 2 });
  });
});

describe('a waiting request\'s place in the queue', () => {
  const waiting = (sessionId: number, tenantId: number, name: string) => queuedRequest(sessionId, 1, { tenantId, name });
  const now = () => Date.parse(AT);

  it('given two waiting requests, then 1 and 2; given one of them left the queue since the view was read, then null for it, not 0', () => {
    const queued = given(tenant(1, 'alice'), tenant(2, 'bob'), ...waiting(1, 1, 'alice'), ...waiting(2, 2, 'bob'));
    expect([1, 2].map((id) => queuePosition(queued, id, now)).sort()).toEqual([1, 2]);
    const left = given(tenant(1, 'alice'), tenant(2, 'bob'), ...waiting(1, 1, 'alice'), ...waiting(2, 2, 'bob'), ['session-1', { type: 'SessionRejected', data: { sessionId: 1, reason: 'cancelled', at: AT } }]);
    expect(queuePosition(left, 1, now)).toBeNull();
    expect(queuePosition(left, 2, now)).toBe(1);
  });
});
