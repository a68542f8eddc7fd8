/**
 * Layers point inward: http -> application -> domain; adapters implement application ports.
 * `npm test` runs this first (scripts/test.sh); test/unit/layers.spec.ts shows a forbidden import failing it.
 */
module.exports = {
  forbidden: [
    {
      name: 'domain-is-pure',
      comment: 'The domain (events, World, deciders, policy, fair queue) imports nothing outside itself: no Nest, no driver, no config, no node: module.',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { pathNot: '^src/domain/' },
    },
    {
      name: 'projections-are-pure',
      comment: 'Projections are event in, document change out: they see the domain and the event types of the ledger port only.',
      severity: 'error',
      from: { path: '^projections/' },
      to: { pathNot: ['^projections/', '^src/domain/', '^src/application/ports/'] },
    },
    {
      name: 'application-does-not-know-http',
      severity: 'error',
      from: { path: '^src/application/' },
      to: { path: '^src/http/' },
    },
    {
      name: 'application-reaches-adapters-through-ports',
      comment: 'The application sees adapters through its ports; the two exceptions the README lists: the runner port (ansible-runner) and the metrics registry.',
      severity: 'error',
      from: { path: '^src/application/' },
      to: { path: '^src/adapters/', pathNot: ['^src/adapters/ansible-runner\\.ts$', '^src/adapters/metrics\\.ts$'] },
    },
    {
      name: 'adapters-do-not-know-http-or-handlers',
      comment: 'Adapters implement ports; they do not call controllers or command handlers.',
      severity: 'error',
      from: { path: '^src/adapters/' },
      to: { path: ['^src/http/', '^src/application/handlers/'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: ['^dist/', '^node_modules/'] },
  },
};
