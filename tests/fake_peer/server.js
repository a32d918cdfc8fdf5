// A stand-in for the reference peer that bench/run.py --peer drives: the same settings from the
// environment, the same four answers, without oidc-provider itself (the suite installs nothing).
import cluster from 'node:cluster';
import http from 'node:http';

const port = Number.parseInt(process.env.PEER_PORT, 10);
const workers = Number.parseInt(process.env.PEER_WORKERS || '1', 10);

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  process.on('SIGTERM', () => {
    for (const worker of Object.values(cluster.workers)) worker.kill();
    process.exit(0);
  });
} else {
  const issuer = `http://127.0.0.1:${port}`;
  const credentials = `${process.env.PEER_CLIENT_ID}:${process.env.PEER_CLIENT_SECRET}`;
  const basic = `Basic ${Buffer.from(credentials).toString('base64')}`;
  http.createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      const send = (document, status = 200) => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(document));
      };
      if (request.url === '/.well-known/openid-configuration') return send({ issuer });
      if (request.url === '/jwks') return send({ keys: [{ kty: 'RSA' }] });
      if (request.headers.authorization !== basic) return send({ error: 'invalid_client' }, 401);
      if (request.url === '/token' && body === 'grant_type=client_credentials') {
        return send({ access_token: 'token', token_type: 'Bearer' });
      }
      if (request.url === '/token/introspection' && body === `token=${process.env.PEER_SEED_TOKEN}`) {
        return send({ active: true });
      }
      return send({ error: 'not_found' }, 404);
    });
  }).listen(port, '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
}
