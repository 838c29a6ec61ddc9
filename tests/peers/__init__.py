"""Third-party peers the e2e tests run against logbus: the RabbitMQ tutorials in pika
(``tutorials/python``) and amqplib (``tutorials/node``), and ``harness`` to run them."""
