#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 2 (work queues), the producer: persistent messages on the durable
// "task_queue", declared quorum as the current tutorial does (--classic: a classic queue,
// as the older tutorials did).
const peer = require('./peer');

async function main() {
  const { options, words } = peer.parseArgs(process.argv.slice(2));
  const connection = await peer.connect(options);
  // A confirm channel, waited on before closing (the tutorial closes at once): under load
  // the last few of 30 unconfirmed messages to the quorum task_queue never arrived.
  const channel = await connection.createConfirmChannel();
  const queue = 'task_queue';
  const args = options.classic ? {} : { arguments: { 'x-queue-type': 'quorum' } };
  await channel.assertQueue(queue, { durable: true, ...args });
  for (const msg of peer.bodies(options, words, 'Hello World!')) {
    channel.sendToQueue(queue, msg, { persistent: true });
    console.log(" [x] Sent '%s'", msg.toString());
  }
  await channel.waitForConfirms();
  await channel.close();
  await connection.close();
}

main().catch((err) => peer.usage(String(err)));
