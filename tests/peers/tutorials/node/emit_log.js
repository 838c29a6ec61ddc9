#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 3 (publish/subscribe), the publisher: a fanout exchange "logs".
const peer = require('./peer');

async function main() {
  const { options, words } = peer.parseArgs(process.argv.slice(2));
  const connection = await peer.connect(options);
  const channel = await connection.createChannel();
  const exchange = 'logs';
  await channel.assertExchange(exchange, 'fanout', { durable: false });
  for (const msg of peer.bodies(options, words, 'info: Hello World!')) {
    channel.publish(exchange, '', msg);
    console.log(' [x] Sent %s', msg.toString());
  }
  await channel.close();
  await connection.close();
}

main().catch((err) => peer.usage(String(err)));
