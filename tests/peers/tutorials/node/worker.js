#!/usr/bin/env node
'use strict';
// RabbitMQ tutorial 2 (work queues), the worker: prefetch 1 (fair dispatch), one second of
// "work" per dot in the body (--dot-seconds changes that), ack after the work. Declares
// "task_queue" durable and quorum like the current tutorial (--classic: classic).
const peer = require('./peer');

async function main() {
  const { options } = peer.parseArgs(process.argv.slice(2));
  const dotSeconds = options.dotSeconds === undefined ? 1 : options.dotSeconds;
  const connection = await peer.connect(options);
  const channel = await connection.createChannel();
  const queue = 'task_queue';
  const args = options.classic ? {} : { arguments: { 'x-queue-type': 'quorum' } };
  await channel.assertQueue(queue, { durable: true, ...args });
  await channel.prefetch(1);
  console.log(' [*] Waiting for messages in %s. To exit press CTRL+C', queue);
  await peer.consume(connection, channel, queue, async (msg) => {
    const secs = msg.content.toString('latin1').split('.').length - 1;
    if (!options.json) console.log(' [x] Received %s', msg.content.toString());
    await new Promise((resolve) => setTimeout(resolve, secs * dotSeconds * 1000));
    channel.ack(msg);
    console.log(options.json ? peer.asJson(msg) : ' [x] Done');
  }, options, false);
}

main().catch((err) => peer.usage(String(err)));
