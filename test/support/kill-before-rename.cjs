// Preloaded into a CLI run (node --require): SIGKILLs the process just before it renames a file whose name ends with
// KILL_BEFORE_RENAME_OF, as a kill -9 or a power cut at that point would stop it.
const fs = require('node:fs');
const { syncBuiltinESMExports } = require('node:module');
const renameSync = fs.renameSync;
fs.renameSync = function (from, to) {
  if (String(from).endsWith(`/${process.env.KILL_BEFORE_RENAME_OF}`)) process.kill(process.pid, 'SIGKILL');
  return renameSync.call(this, from, to);
};
// KILL_BEFORE_REMOVE_OF: the same, just before it removes such a file.
const rmSync = fs.rmSync;
fs.rmSync = function (path, ...rest) {
  if (process.env.KILL_BEFORE_REMOVE_OF && String(path).endsWith(`/${process.env.KILL_BEFORE_REMOVE_OF}`)) process.kill(process.pid, 'SIGKILL');
  return rmSync.call(this, path, ...rest);
};
syncBuiltinESMExports();
