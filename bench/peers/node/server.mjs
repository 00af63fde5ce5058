// Peer: better-sse on Node 20, one channel, POST /publish broadcasts to it.
import http from 'node:http';
import { createChannel, createSession } from 'better-sse';

const port = Number(process.argv[2]);
const channel = createChannel();

const server = http.createServer(async (req, res) => {
  if (req.url === '/healthz') {
    res.end('ok');
  } else if (req.url === '/events') {
    const session = await createSession(req, res);
    channel.register(session);
    session.push({}, 'ready');
  } else if (req.url === '/publish' && req.method === 'POST') {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    channel.broadcast(JSON.parse(Buffer.concat(chunks).toString()), 'case-updated');
    res.end('ok');
  } else {
    res.statusCode = 404;
    res.end();
  }
});
server.keepAliveTimeout = 0;
server.requestTimeout = 0;
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
