import { join } from 'node:path';
import { READMODELS_URL } from '../../config/config.js';
import { MongoReadModels } from './mongo-read-models.js';
import { type ReadModelStore } from '../../application/ports/read-model.port.js';
import { SqliteReadModels } from './sqlite-read-models.js';

/** `DUFFY_READMODELS=mongodb://...` selects MongoDB; unset means the embedded SQLite file in the data dir. */
export function createReadModels(url: string | undefined, dataDir: string): ReadModelStore {
  if (!url) return new SqliteReadModels(join(dataDir, 'readmodels.sqlite'));
  if (READMODELS_URL.test(url)) return new MongoReadModels(url);
  throw new Error(`DUFFY_READMODELS: unsupported URL '${url}' (expected mongodb://... or unset for the embedded read models)`);
}
