import { describe, expect, it } from '@jest/globals';
import { publicData } from '../../src/http/views.js';

describe('node data a tenant sees', () => {
  it('drops every key that names a credential, at any depth, and keeps the rest', () => {
    const data = {
      rack: 'r1',
      ipmi: { host: 'bmc.test', user: 'root', pass: 'p1', 'private-key': 'k', 'api-key': 'a', passphrase: 'pp', pwd: 'p2', auth: 'Bearer x', ssh_key: 's', root_pw: 'p3', pin: '1234', cert: 'c' },
      tokens: ['t'],
      list: [{ password: 'p4', slot: 3 }],
      bypass_cache: true,
      compass: 'north',
    };
    expect(publicData(data)).toEqual({ rack: 'r1', ipmi: { host: 'bmc.test', user: 'root' }, list: [{ slot: 3 }], bypass_cache: true, compass: 'north' });
  });
});
