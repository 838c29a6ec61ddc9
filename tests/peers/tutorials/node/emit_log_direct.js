#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 4 (routing), the publisher: a direct exchange "direct_logs" keyed by
// severity alone.
const peer = require('./peer');

async function main() {
  const { options, words } = peer.parseArgs(process.argv.slice(2));
  const severity = words.length > 0 ? words[0] : 'info';
  const connection = await peer.connect(options);
  const channel = await connection.createChannel();
  const exchange = 'direct_logs';
  await channel.assertExchange(exchange, 'direct', { durable: false });
  for (const msg of peer.bodies(options, words.slice(1), 'Hello World!')) {
    channel.publish(exchange, severity, msg);
    console.log(" [x] Sent %s: '%s'", severity, msg.toString());
  }
  await channel.close();
  await connection.close();
}

main().catch((err) => peer.usage(String(err)));
