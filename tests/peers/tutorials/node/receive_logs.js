#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 3 (publish/subscribe), the consumer: an exclusive server-named queue
// bound to the fanout exchange "logs".
const peer = require('./peer');

async function main() {
  const { options } = peer.parseArgs(process.argv.slice(2));
  const connection = await peer.connect(options);
  const channel = await connection.createChannel();
  const exchange = 'logs';
  await channel.assertExchange(exchange, 'fanout', { durable: false });
  const q = await channel.assertQueue('', { exclusive: true });
  await channel.bindQueue(q.queue, exchange, '');
  console.log(' [*] Waiting for messages in %s. To exit press CTRL+C', q.queue);
  await peer.consume(connection, channel, q.queue, (msg) => {
    console.log(options.json ? peer.asJson(msg) : ` [x] ${msg.content.toString()}`);
  }, options, true);
}

main().catch((err) => peer.usage(String(err)));
