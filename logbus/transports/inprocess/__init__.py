"""The in-process broker (:mod:`logbus.broker`) behind the ``Transport`` Protocol.

``memory://`` drives it with threads, ``gevent://`` with greenlets,
``process://`` runs it in a child process and ``local://`` reaches a ``logbus
broker serve`` process over a Unix socket; ``link`` is the framed connection the
last two speak. Nothing is imported here: :func:`logbus.transports.connect`
loads the module a URL names, so gevent stays unimported until ``gevent://``.
"""
