// The bare `net` ceiling for a pass-through: a TCP relay of our own that gives every visitor
// connection one origin connection of its own and copies bytes both ways, nothing parsed, no
// header added. It makes the same syscalls per keep-alive exchange as Verge's fast pass-through
// (one read and one write on each side) and none of the HTTP work, so it is the least CPU a
// Node.js process can spend relaying a request and its answer: the pass-through's counterpart of
// bench/net-ceiling.ts. Used by bench/passthru.sh and bench/tails.sh (system `netpass`);
// ORIGIN_PORT (default 28390) on 127.0.0.1, PORT (default 28394).
import net from 'node:net';

const originPort = Number(process.env['ORIGIN_PORT'] ?? 28390);

const relay = (visitor: net.Socket): void => {
  const origin = net.connect({ host: '127.0.0.1', port: originPort, noDelay: true });
  const close = (): void => {
    visitor.destroy();
    origin.destroy();
  };
  visitor.on('error', close).on('close', close);
  origin.on('error', close).on('close', close);
  // socket.write queues in JavaScript until the origin connection is up: the first request is
  // not lost. A false write pauses the other side until 'drain' (bounded memory, as Verge).
  visitor.on('data', function netProxyUp(chunk: Buffer) {
    if (!origin.write(chunk)) visitor.pause();
  });
  origin.on('data', function netProxyDown(chunk: Buffer) {
    if (!visitor.write(chunk)) origin.pause();
  });
  origin.on('drain', () => visitor.resume());
  visitor.on('drain', () => origin.resume());
};

net.createServer({ noDelay: true }, relay).listen(Number(process.env['PORT'] ?? 28394), '127.0.0.1');
// a clean exit on Ctrl-C, so that node --cpu-prof writes its profile
process.on('SIGINT', () => process.exit(0));
