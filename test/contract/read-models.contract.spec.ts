import { describe, it } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeUrl, withoutPassword } from '../../src/config/config.js';
import { MongoReadModels } from '../../src/adapters/readmodels/mongo-read-models.js';
import { SqliteReadModels } from '../../src/adapters/readmodels/sqlite-read-models.js';
import { readModelsContract } from './read-models.contract.js';

const dir = mkdtempSync(join(tmpdir(), 'duffy-rm-'));
readModelsContract('embedded SQLite', async () => new SqliteReadModels(join(dir, 'readmodels.sqlite')));

// A set but unsupported URL fails the suite (as it fails start-up), it is not skipped.
const mongo = storeUrl('DUFFY_READMODELS', process.env.DUFFY_READMODELS);
if (mongo) {
  readModelsContract(`MongoDB at ${withoutPassword(mongo)}`, async () => new MongoReadModels(mongo));
} else {
  console.log('SKIPPED: MongoDB read-model contract suite (set DUFFY_READMODELS=mongodb://... e.g. after `docker compose up -d mongo`)');
  describe('read models contract: MongoDB', () => {
    it.skip('SKIPPED: no DUFFY_READMODELS=mongodb://... server configured', () => undefined);
  });
}
