#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 5 (topics), the consumer: an exclusive server-named queue bound to
// "topic_logs" once per binding key given (kern.*, *.critical, #).
const peer = require('./peer');

async function main() {
  const { options, words } = peer.parseArgs(process.argv.slice(2));
  if (words.length === 0) peer.usage('Usage: receive_logs_topic.js <facility>.<severity>');
  const connection = await peer.connect(options);
  const channel = await connection.createChannel();
  const exchange = 'topic_logs';
  await channel.assertExchange(exchange, 'topic', { durable: false });
  const q = await channel.assertQueue('', { exclusive: true });
  for (const key of words) await channel.bindQueue(q.queue, exchange, key);
  console.log(' [*] Waiting for logs. To exit press CTRL+C');
  await peer.consume(connection, channel, q.queue, (msg) => {
    const line = ` [x] ${msg.fields.routingKey}:'${msg.content.toString()}'`;
    console.log(options.json ? peer.asJson(msg) : line);
  }, options, true);
}

main().catch((err) => peer.usage(String(err)));
