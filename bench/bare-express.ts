/** P1's yardstick: Express with the same JSON body parsing and the same two routes, answering at once. */
import express from 'express';

const app = express();
app.use(express.json());
let next = 0;
app.post('/api/v1/sessions', (_req, res) => {
  res.status(201).json({ action: 'post', session: { id: ++next } });
});
app.put('/api/v1/sessions/:id', (req, res) => {
  res.json({ action: 'put', session: { id: Number(req.params.id), active: false } });
});
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address();
  console.log(`listening ${typeof address === 'object' && address ? address.port : ''}`);
});
