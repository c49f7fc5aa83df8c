"""The realtime kernel: live delivery of committed events to WebSockets (hub.py) and what every
socket shares (sockets.py). It knows nothing of the domain: the wiring hands it the queue's
loader at startup (`hub.configure`), and the adapters' sockets say how to read a stream and
which of their exceptions are refusals (`sockets.JsonSocket`)."""
