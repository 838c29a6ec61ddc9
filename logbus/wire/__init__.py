"""logbus's own wire format: the frames of the process and local links, and of the journal on disk.

:mod:`logbus.wire.frames` is one frame (a JSON header and a raw body, property
values JSON lacks in a tagged encoding); :mod:`logbus.wire.batch` packs many
publishes, outcomes or deliveries into one frame. Both the in-process broker
(:mod:`logbus.broker`) and the transports that reach it use this package, so it
imports neither.
"""
