#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 5 (topics), the publisher: a topic exchange "topic_logs" keyed
// <facility>.<severity> (or anything the caller gives).
const peer = require('./peer');

async function main() {
  const { options, words } = peer.parseArgs(process.argv.slice(2));
  const key = words.length > 0 ? words[0] : 'anonymous.info';
  const connection = await peer.connect(options);
  const channel = await connection.createChannel();
  const exchange = 'topic_logs';
  await channel.assertExchange(exchange, 'topic', { durable: false });
  for (const msg of peer.bodies(options, words.slice(1), 'Hello World!')) {
    channel.publish(exchange, key, msg);
    console.log(" [x] Sent %s: '%s'", key, msg.toString());
  }
  await channel.close();
  await connection.close();
}

main().catch((err) => peer.usage(String(err)));
