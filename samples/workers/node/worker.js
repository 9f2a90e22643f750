// An InferPool worker in Node.js, standard library only: proof that the protocol is language-neutral.
// The "model" sums each input array (or doubles a number); replace infer() with real inference.
// Protocol: docs/worker-protocol.md. Logs go to stderr; stdout carries only protocol lines.
'use strict';
const fs = require('node:fs');
const readline = require('node:readline');

// Protocol lines go straight to file descriptor 1; anything else that writes to stdout (console.log, a
// library's banner) is sent to stderr, where it lands in InferPool's log instead of in the protocol.
const protocol = 1;
process.stdout.write = process.stderr.write.bind(process.stderr);

const device = process.env.INFERPOOL_DEVICE || 'cpu';
const replica = process.env.INFERPOOL_REPLICA || '';

function infer(input) {
  if (Array.isArray(input)) {
    return { sum: input.reduce((a, b) => a + b, 0), device, replica };
  }
  if (typeof input === 'number') {
    return { double: input * 2, device, replica };
  }
  throw new TypeError(`cannot handle input of type ${typeof input}`);
}

function send(message) {
  fs.writeSync(protocol, JSON.stringify(message) + '\n');
}

send({ type: 'hello', protocol: 1, name: 'node-sum', max_batch: 0 });
console.error(`node worker ${replica} ready on ${device}`);

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const request = JSON.parse(line);
  if (request.type === 'shutdown') {
    lines.close();
    return;
  }
  const results = request.items.map((item) => {
    try {
      return { ok: true, output: infer(item.input) };
    } catch (error) {
      return { ok: false, error: error.message, error_type: error.name };
    }
  });
  send({ type: 'result', id: request.id, results });
});
lines.on('close', () => process.exit(0));
