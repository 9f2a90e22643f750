// An InferPool worker in Node.js, standard library only: proof that the protocol is language-neutral.
// The "model" sums each input array (or doubles a number); replace infer() with real inference.
// Protocol: docs/worker-protocol.md. Logs go to stderr; stdout carries only protocol lines.
'use strict';
const readline = require('node:readline');

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
  process.stdout.write(JSON.stringify(message) + '\n');
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
