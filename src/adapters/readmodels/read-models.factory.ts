import { Logger } from '@nestjs/common';
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { storeUrl } from '../../config/config.js';
import { READ_MODELS_FILE } from '../eventstore/data-dir-lock.js';
import { damagedDatabase } from '../../application/ports/storage-fault.port.js';
import { MongoReadModels } from './mongo-read-models.js';
import { type ReadModelStore } from '../../application/ports/read-model.port.js';
import { SqliteReadModels } from './sqlite-read-models.js';

/** `DUFFY_READMODELS=mongodb://...` selects MongoDB; unset means the embedded SQLite file in the data dir. */
export function createReadModels(url: string | undefined, dataDir: string): ReadModelStore {
  if (!url) return openEmbedded(join(dataDir, READ_MODELS_FILE));
  return new MongoReadModels(storeUrl('DUFFY_READMODELS', url)!);
}

/**
 * The embedded read models are a cache of the ledger: a damaged file is set aside (kept for a look) and a fresh one
 * rebuilt from the ledger, rather than keeping Duffy from starting.
 */
function openEmbedded(file: string): SqliteReadModels {
  try {
    return new SqliteReadModels(file);
  } catch (err) {
    const code = damagedDatabase(err);
    if (code === undefined) throw err;
    const aside = `${file}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    for (const suffix of ['', '-wal', '-shm']) if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
    new Logger('ReadModels').warn(`${file} is not a sound SQLite database (${code}): set aside as ${aside}; the read models are rebuilt from the ledger`);
    return new SqliteReadModels(file);
  }
}
