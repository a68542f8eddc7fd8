// Preloaded into the soak's server (`node --expose-gc --import`): SIGWINCH (not a signal Nest's shutdown hooks take) runs a full GC, so the heap /metrics shows
// next is what is still referenced, not what V8 has yet to collect. Nothing else of the server changes.
process.on('SIGWINCH', () => (globalThis as { gc?: () => void }).gc?.());
