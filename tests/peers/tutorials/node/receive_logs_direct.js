#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 4 (routing), the consumer: an exclusive server-named queue bound to
// "direct_logs" once per severity given.
const peer = require('./peer');

async function main() {
  const { options, words } = peer.parseArgs(process.argv.slice(2));
  if (words.length === 0) peer.usage('Usage: receive_logs_direct.js [info] [warning] [error]');
  const connection = await peer.connect(options);
  const channel = await connection.createChannel();
  const exchange = 'direct_logs';
  await channel.assertExchange(exchange, 'direct', { durable: false });
  const q = await channel.assertQueue('', { exclusive: true });
  for (const severity of words) await channel.bindQueue(q.queue, exchange, severity);
  console.log(' [*] Waiting for logs. To exit press CTRL+C');
  await peer.consume(connection, channel, q.queue, (msg) => {
    const line = ` [x] ${msg.fields.routingKey}: '${msg.content.toString()}'`;
    console.log(options.json ? peer.asJson(msg) : line);
  }, options, true);
}

main().catch((err) => peer.usage(String(err)));
