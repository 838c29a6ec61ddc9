'use strict';
// What the eight tutorial programs share, kept out of them so they read like the tutorials.
//
// The RabbitMQ tutorials hard-wire localhost and print for a person. The tests need a
// broker URL (--url, else $AMQP_URL), exact bodies in and out (--body-b64 to publish
// bytes that are not text; --json to print each delivery as one JSON line with its body
// in base64), and consumers that stop by themselves (--count N, --timeout SECONDS).
// Nothing else differs from the tutorials' behaviour.

const amqp = require('amqplib');

const DEFAULT_URL = 'amqp://guest:guest@localhost:5672/%2F';
const VALUED = new Set(['--url', '--count', '--timeout', '--body-b64', '--dot-seconds']);

// argv after the script: {options, words}; options named without dashes, --body-b64 is a list.
function parseArgs(argv) {
  const options = { bodyB64: [] };
  const words = [];
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (VALUED.has(arg)) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      const value = argv[(i += 1)];
      if (arg === '--body-b64') options.bodyB64.push(value);
      else options[arg.slice(2).replace(/-(.)/g, (_, c) => c.toUpperCase())] = value;
    } else if (arg === '--json' || arg === '--classic') {
      options[arg.slice(2)] = true;
    } else {
      words.push(arg);
    }
  }
  for (const name of ['count', 'timeout', 'dotSeconds']) {
    if (options[name] !== undefined) options[name] = Number(options[name]);
  }
  return { options, words };
}

function connect(options) {
  return amqp.connect(options.url || process.env.AMQP_URL || DEFAULT_URL);
}

// What to publish: the --body-b64 bodies, else the words joined (the tutorials' way).
function bodies(options, words, fallback) {
  if (options.bodyB64.length > 0) return options.bodyB64.map((b) => Buffer.from(b, 'base64'));
  return [Buffer.from(words.join(' ') || fallback)];
}

// One delivery as a JSON line: exchange, routing key, redelivered, body in base64.
function asJson(msg) {
  return JSON.stringify({
    exchange: msg.fields.exchange,
    routing_key: msg.fields.routingKey,
    redelivered: Boolean(msg.fields.redelivered),
    body_b64: msg.content.toString('base64'),
  });
}

// Consume queue with handle(msg) (which may return a promise) until --count messages or
// --timeout; then close and exit: 1 if the timeout came before --count messages, else 0.
async function consume(connection, channel, queue, handle, options, noAck) {
  let seen = 0;
  let done = false;
  const finish = async (status) => {
    if (done) return;
    done = true;
    await connection.close().catch(() => {});
    process.exit(status);
  };
  await channel.consume(
    queue,
    async (msg) => {
      if (msg === null || done) return;
      await handle(msg);
      seen += 1;
      if (options.count !== undefined && seen >= options.count) await finish(0);
    },
    { noAck },
  );
  if (options.timeout !== undefined) {
    setTimeout(() => finish(options.count !== undefined && seen < options.count ? 1 : 0),
      options.timeout * 1000);
  }
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => finish(0));
}

function usage(text) {
  process.stderr.write(`${text}\n`);
  process.exit(1);
}

module.exports = { asJson, bodies, connect, consume, parseArgs, usage };
